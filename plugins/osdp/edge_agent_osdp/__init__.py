"""OSDP card readers for edge-agent (IEC 60839-11-5, RS-485).

A reader is a static device of the site config::

    [[devices]]
    plugin = "osdp"
    identity = "osdp:RDR-0001"                 # the reader's serial number
    address = "/dev/serial/by-id/usb-FTDI_RS485-if00"
    properties = { pd_address = 101, key_file = "keys/rdr-0001.key" }

The secure channel is always on: ``key_file`` holds the reader's 16-byte secure channel
base key (32 hex digits, mode 0600), the same key the reader was programmed with at
installation. The driver is libosdp's control panel; card reads and keypad digits are
pushed to the core (contract 1.3 ``PushChannel.credential``), and the core answers on
the reader's LED and buzzer (``indicate``).
"""

__version__ = "0.1.0"
PLUGIN = "osdp"
