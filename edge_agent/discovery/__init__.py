"""Discovery sources: mDNS/DNS-SD, USB-serial ports and RS-485 bus probes."""
