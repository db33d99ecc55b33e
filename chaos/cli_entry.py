"""``python -m chaos.cli_entry ...`` runs the gameday CLI (for subprocesses and tests)."""

from chaos.cli import app

if __name__ == "__main__":
    app()
