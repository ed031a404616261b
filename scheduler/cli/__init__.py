"""The `trainpool` command line (typer). Commands that need the service talk HTTP."""
