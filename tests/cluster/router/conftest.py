"""Fixtures shared by the router's API tests (boto3 clients and throwaway tables on the
session cluster), defined in test_api_boto3.py."""

from tests.cluster.router.test_api_boto3 import ddb, new_table, raw

__all__ = ["ddb", "new_table", "raw"]
