"""``melt devices``: configured devices, and whether they answer."""

from __future__ import annotations


import click

from melt.cli.common import echo_json, json_option


def _describe(ref: str) -> dict:
    from melt.config.loader import load_device
    from melt.devices.registry import open_device
    from melt.errors import MeltError

    row: dict = {"name": ref}
    try:
        spec = load_device(ref)
        row.update(kind=spec.kind, simulated=spec.simulated)
        device = open_device(spec)
    except MeltError as exc:
        row.update(status="missing", reason=str(exc))
        return row
    try:
        row.update(status="ready", properties=device.properties())
        health = getattr(device, "health", None)
        if callable(health):
            row["health"] = health()
    except MeltError as exc:
        row.update(status="error", reason=str(exc))
    finally:
        device.close()
    return row


class DevicesGroup(click.Group):
    """`melt devices [NAMES...] [--json]` lists (the `list` subcommand); `trust` is the other one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DevicesGroup)
def devices() -> None:
    """Configured devices (device_configs/*.yaml): list them, trust an SSH board.

    \b
      melt devices [NAMES...] [--json]     same as `melt devices list`
      melt devices trust NAME              record an SSH board's host key
    """


@devices.command(name="list")
@click.argument("names", nargs=-1)
@json_option
def list_(names: tuple[str, ...], as_json: bool) -> None:
    """List configured devices and whether they are reachable.

    Give NAMES to check only those; `--json` prints properties and health.
    """
    from melt.config.loader import available_devices

    rows = [_describe(n) for n in (names or available_devices())]
    extra = []
    iphones: list[dict] = []
    iphone_note = None
    if not names:  # a full listing also shows phones adb and usbmux see that no config names
        from melt.devices.android import attached_unconfigured
        from melt.transports.ios import attached_iphones

        extra = attached_unconfigured(rows)
        configured = {str((r.get("properties") or {}).get("udid")) for r in rows}
        found, iphone_note = attached_iphones()
        iphones = [d for d in found if str(d.get("udid")) not in configured]
    if as_json:
        echo_json({"devices": rows, "attached_unconfigured": extra, "iphones": iphones,
                   "iphones_note": iphone_note})
        return
    from rich.table import Table

    from melt.cli.common import console

    table = Table("name", "kind", "status", "model / os", "battery", "temp", "note")
    for r in rows:
        p = r.get("properties") or {}
        h = r.get("health") or {}
        table.add_row(
            r["name"] + (" (sim)" if r.get("simulated") else ""), r.get("kind", "?"), r["status"],
            str(p.get("model") or p.get("cpu_model") or "") + " / " + str(p.get("android_version") or p.get("os") or ""),
            f"{h['battery_pct']:.0f}%" if h.get("battery_pct") is not None else "-",
            f"{h['temp_c']:.1f} °C" if h.get("temp_c") is not None else "-",
            (r.get("reason") or "")[:80],
        )
    for e in extra:
        table.add_row(e.get("serial", "?"), "android", "attached, not configured",
                      str(e.get("model", "")), "-", "-", "add a device config to use it")
    for d in iphones:
        table.add_row(str(d.get("name") or d.get("udid")), "ios", "attached, not configured",
                      f"{d.get('product_type') or '?'} / iOS {d.get('ios_version') or '?'}", "-", "-",
                      str(d.get("status") or "add a device config (kind: ios) to use it"))
    out = console()
    out.print(table)
    if iphone_note:
        out.print(f"iPhones: {iphone_note}", markup=False, highlight=False)


@devices.command()
@click.argument("name")
@click.option("--fingerprint", "expect", default=None, metavar="SHA256:...",
              help="Record the key only if it has this fingerprint (checked on the board: "
                   "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).")
def trust(name: str, expect: str | None) -> None:
    """Trust the SSH host key that device NAME offers now: show its fingerprint, record it.

    melt refuses SSH boards whose key is unknown or changed; this is the one
    way to accept one (in melt's own known_hosts; ~/.ssh/known_hosts is
    read, never written).
    """
    from melt.config.loader import load_device
    from melt.errors import MeltError
    from melt.transports.hostkeys import fingerprint, host_entry, trust as trust_key

    spec = load_device(name)
    if spec.ssh is None:
        raise click.ClickException(f"{name}: not an SSH device (kind {spec.kind}); nothing to trust")
    ssh = spec.ssh
    sock = None
    if ssh.jump is not None:
        from melt.transports.ssh import SshTransport

        j = ssh.jump
        bastion = SshTransport(j.host, port=j.port, user=j.user or ssh.user, key_file=j.key_file,
                               device=f"{name} (jump host)")
        sock = bastion.transport().open_channel("direct-tcpip", (ssh.host, ssh.port), ("127.0.0.1", 0))
    try:
        key, path = trust_key(ssh.host, ssh.port, expect=expect, timeout=ssh.connect_timeout_s, sock=sock)
    except MeltError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{host_entry(ssh.host, ssh.port)} {key.get_name()} {fingerprint(key)}")
    click.echo(f"trusted: recorded in {path}")
