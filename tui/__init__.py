"""Technician dashboard (Textual) for edge-agent."""
