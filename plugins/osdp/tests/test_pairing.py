"""First pairing of an OSDP reader in install mode (issue 11): libosdp's control panel in
the agent sets a new secure channel key on libosdp's own peripheral device (fresh from
its box: install mode, default key SCBK-D) over a pseudo-terminal; the key is stored
0600, the pairing audited, and never repeated while the key file exists."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from edge_agent_osdp.simulator import ReaderSimulator

from edge_agent.testing import running_agent, short_tempdir, wait_device, wait_event

READER = "osdp:RDR-0000C0DE"


def site(link: Path, key_file: Path, *, install_mode: bool) -> str:
    return (f'[site]\nid = "Pairing"\n[agent]\npoll_interval = 0.2\ncommand_timeout = 2.0\n'
            "backoff_initial = 0.1\nbackoff_max = 0.5\n"
            f'[[devices]]\nplugin = "osdp"\nidentity = "{READER}"\naddress = "{link}"\n'
            f'properties = {{ pd_address = 7, key_file = "{key_file}", '
            f'install_mode = {"true" if install_mode else "false"} }}\n')


async def test_a_new_reader_is_paired_once_in_install_mode(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "front-desk.key"
    key_file.parent.mkdir(mode=0o700)
    with short_tempdir() as run:
        link = run / "ttyRDR"
        sim = ReaderSimulator(str(link), pd_address=7, serial_number=0xC0DE, key=None)
        await asyncio.to_thread(sim.start)
        try:
            # Without install_mode the agent does not pair: it says what to do.
            async with running_agent(site(link, key_file, install_mode=False),
                                     tmp_path / "s0") as (_agent, client):
                dev = await wait_device(client, READER, lambda d: d["link"] == "offline",
                                        timeout=15)
                assert "install mode" in dev["reason"] and not key_file.exists()
                assert sim.keysets == 0

            async with running_agent(site(link, key_file, install_mode=True),
                                     tmp_path / "s1") as (_agent, client):
                dev = await wait_device(client, READER, timeout=20)
                assert dev["info"]["serial"] == "RDR-0000C0DE"
                ev = await wait_event(client, action="device_key_installed")
                assert ev["device"] == READER and "install mode" in ev["details"]["what"]
            assert sim.keysets == 1
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            stored = bytes.fromhex(key_file.read_text().strip())
            assert sim.key == stored and len(stored) == 16
            assert not list(key_file.parent.glob("*.pairing"))

            # A restart with install_mode still set: the key file exists, so the control
            # panel never enters install mode again; the channel runs on the stored key.
            async with running_agent(site(link, key_file, install_mode=True),
                                     tmp_path / "s1") as (_agent, client):
                await wait_device(client, READER, timeout=20)
                assert len(await client.call("events", action="device_key_installed")) == 1
            assert sim.keysets == 1
        finally:
            await asyncio.to_thread(sim.stop)
