"""DynamoDB errors as the router returns them: a ``__type`` and an HTTP status.

raise DynamoError.validation("One or more parameter values were invalid: ...")
body, status = err.body(), err.status     # {"__type": "com.amazonaws.dynamodb.v20120810#...",
                                          #  "message": "..."}, 400
"""

from __future__ import annotations

from typing import Any

_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_CORAL = "com.amazon.coral.service#"
_VALIDATE = "com.amazon.coral.validate#"
# Types that DynamoDB reports under the Coral service namespace rather than its own.
_CORAL_TYPES = {
    "ValidationException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "UnknownOperationException",
    "SerializationException",
    "RequestTimeoutException",
    "AccessDeniedException",
}


class DynamoError(Exception):
    def __init__(self, type_: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        prefix = _CORAL if self.type in _CORAL_TYPES else _PREFIX
        if self.type == "ValidationException":
            prefix = _VALIDATE  # DynamoDB's own wire form for request validation
        return {"__type": prefix + self.type, "message": self.message, **self.extra}

    @classmethod
    def validation(cls, message: str) -> DynamoError:
        return cls("ValidationException", message)

    @classmethod
    def not_found(cls, table: str | None = None) -> DynamoError:
        what = f": Table: {table} not found" if table else ""
        return cls("ResourceNotFoundException", f"Requested resource not found{what}")

    @classmethod
    def in_use(cls, message: str) -> DynamoError:
        return cls("ResourceInUseException", message)

    @classmethod
    def conditional_failed(cls, item: dict[str, Any] | None = None) -> DynamoError:
        extra: dict[str, Any] = {"Item": item} if item is not None else {}
        return cls(
            "ConditionalCheckFailedException", "The conditional request failed", 400, **extra
        )

    @classmethod
    def internal(cls, message: str = "Internal server error") -> DynamoError:
        return cls("InternalServerError", message, status=500)

    @classmethod
    def unavailable(cls, message: str = "The service is currently unavailable") -> DynamoError:
        return cls("ServiceUnavailable", message, status=503)

    @classmethod
    def throttled(cls, provisioned: bool) -> DynamoError:
        if provisioned:
            return cls(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. "
                "Consider increasing your provisioning level with the UpdateTable API.",
            )
        return cls(
            "ThrottlingException",
            "Throughput exceeds the current capacity of your "
            "table or index. DynamoDB is automatically scaling your table or index so "
            "please try again shortly.",
        )
