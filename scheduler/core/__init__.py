"""The pure decision core: ``decide(snapshot, now) -> Decisions``."""
