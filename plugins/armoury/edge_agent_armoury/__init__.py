"""edge-agent plugin for armoury cabinets built on Modbus I/O controllers.

A cabinet is described by a **device profile** (TOML): which coil releases each slot's
lock, which inputs carry the slot door, item-present and the cabinet's main door, tamper
switch and mains state, which registers hold each slot's RFID tag, temperature and
battery. The plugin ships profiles in ``edge_agent_armoury/profiles/``; a site adds its
own by naming a directory in ``[vendor.armoury] profile_dirs``. A new cabinet model is a
new profile, not new code.

Discovery
---------
mDNS/DNS-SD service type ``_modbus._tcp.local.`` with TXT records:

=========  ==========================================================
``vendor``   cabinet maker (informational)
``profile``  device profile name, e.g. ``sentinel-wc12`` (required)
``serial``   cabinet serial number (required; confirmed over Modbus)
``unit``     Modbus unit id (optional, default from the profile)
=========  ==========================================================

or listed statically in the site config::

    [[devices]]
    plugin = "armoury"
    identity = "armoury:WC12-0001"
    address = "modbus-tcp://10.1.2.3:502"        # or modbus-rtu:///dev/ttyUSB0?baudrate=9600
    properties = { profile = "sentinel-wc12", unit = 1 }

Identity is always the serial number read from the cabinet's own registers: an
advertisement or a config entry naming another serial is refused when the driver connects.
"""

SERVICE_TYPE = "_modbus._tcp.local."
PLUGIN = "armoury"
__version__ = "0.1.0"
