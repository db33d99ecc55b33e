"""Run the Global Admission Control service: ``python -m cluster.admission --config c.json``."""

from __future__ import annotations

from cluster.config import ClusterConfig
from cluster.process import http_service, process_args, run_process, shutdown_signal

from .gac import GlobalAdmission, make_gac_app


async def serve(config: ClusterConfig, process_id: str) -> None:
    async with http_service(
        make_gac_app(GlobalAdmission(), guarded=True), config.process(process_id).listen
    ):
        await shutdown_signal()


def main() -> None:
    run_process(process_args("python -m cluster.admission", __doc__, default_id="gac"), serve)


if __name__ == "__main__":
    main()
