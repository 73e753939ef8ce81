"""edge-agent: site agent for smart equipment lockers and armoury cabinets."""

__version__ = "0.1.0"
