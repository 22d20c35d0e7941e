"""iPhones, through pymobiledevice3 (usbmux, lockdown, DVT instruments, AFC).

An iPhone runs no shell: melt installs a benchmark host app, launches it
with arguments and environment, and reads what it wrote into its Documents
folder. Everything melt needs from the phone goes through the small
:class:`IosServices` interface; :class:`Pymobiledevice3Services` implements
it on pymobiledevice3 (``pip install 'melt[ios]'``), and tests implement it
with a fake, since no iPhone is attached to the machines melt is tested on.

Paths given to :meth:`IosTransport.push` and :meth:`IosTransport.pull` are
relative to the app's Documents folder.

Energy: iOS exposes only the system's *energy impact* estimate per process
(DVT's energy instrument), a unitless score. melt stores it as
``energy_impact`` and never as joules.

A phone that is there but cannot run a job now raises an :class:`IosNotReady`
(the app is not installed, the phone is locked, an iOS 17+ phone has no
RemoteXPC tunnel): the job fails with that reason, and the next job asks again.
Only a phone that went away is a :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from melt.errors import CommandTimeout, DeviceUnavailableError, MeltError, TransportError
from melt.transports.base import CommandResult

INSTALL_HINT = "pymobiledevice3 is not installed: pip install 'melt[ios]' (or pip install pymobiledevice3)"
#: pymobiledevice3's exceptions for a phone that refuses while locked
LOCKED_ERRORS = frozenset({"PasswordRequiredError", "DeviceLockedError", "LockedError"})
TUNNEL_HINT = "start one with `sudo pymobiledevice3 remote tunneld`"


class IosNotReady(MeltError):
    """The iPhone answers but cannot run the job now; ``reason`` says why (a job's failure reason)."""

    reason = "not ready"

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")


class AppNotInstalled(IosNotReady):
    reason = "app not installed"


class DeviceLocked(IosNotReady):
    reason = "device locked"


class TunnelMissing(IosNotReady):
    reason = "tunnel missing"


#: the wire names of these errors (the virtual iPhone's loopback protocol uses them)
NOT_READY = {cls.reason: cls for cls in (AppNotInstalled, DeviceLocked, TunnelMissing)}


def needs_tunnel(ios_version: str | None) -> bool:
    """Whether DVT (launch, process samples) needs a RemoteXPC tunnel: iOS 17 and later."""
    try:
        return int(str(ios_version).split(".")[0]) >= 17
    except ValueError:
        return False


class IosServices(Protocol):
    """What melt needs from an iPhone. Every method raises ``TransportError`` on failure."""

    def list_devices(self) -> list[dict[str, Any]]:
        """Attached iPhones: ``udid``, ``name``, ``product_type``, ``ios_version``, ``build``."""

    def device_info(self, udid: str) -> dict[str, Any]:
        """The same fields for one device."""

    def install(self, udid: str, app: Path) -> None:
        """Install an ``.app`` folder or ``.ipa`` file."""

    def app_installed(self, udid: str, bundle_id: str) -> bool:
        """Whether an app with ``bundle_id`` is installed."""

    def app_installed(self, udid: str, bundle_id: str) -> bool:
        from pymobiledevice3.services.installation_proxy import InstallationProxyService

        async def go() -> bool:
            service = InstallationProxyService(lockdown=await self._lockdown(udid))
            return bool(await service.get_apps(bundle_identifiers=[bundle_id]))

        return self._run(go())

    def launch(self, udid: str, bundle_id: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        """Start the app (killing a running instance); its pid.

        Raises :class:`AppNotInstalled`, :class:`DeviceLocked` or :class:`TunnelMissing`."""

    def is_running(self, udid: str, pid: int) -> bool:
        """Whether the process still runs."""

    def kill(self, udid: str, pid: int) -> None:
        """Stop a process; one already gone is fine."""

    def push(self, udid: str, bundle_id: str, local: Path, remote: str) -> None:
        """Copy a file into the app's Documents (``remote`` relative to it)."""

    def pull(self, udid: str, bundle_id: str, remote: str, local: Path) -> None:
        """Copy a file out of the app's Documents."""

    def exists(self, udid: str, bundle_id: str, remote: str) -> bool:
        """Whether a path exists in the app's Documents."""

    def process_sample(self, udid: str, pid: int) -> dict[str, Any] | None:
        """CPU %, resident bytes and the energy-impact score of ``pid`` where the OS allows; else ``None``."""


@dataclass
class IosAppProcess:
    """A launched app, shaped like :class:`melt.transports.base.RemoteProcess`."""

    services: IosServices
    udid: str
    pid: int
    started: float

    def poll(self) -> int | None:
        """``None`` while it runs, else 0 (iOS reports no exit code through DVT; the app writes its own)."""
        return None if self.services.is_running(self.udid, self.pid) else 0

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.services.is_running(self.udid, self.pid):
            if deadline is not None and time.monotonic() > deadline:
                raise CommandTimeout(f"app pid {self.pid} still running after {timeout:g} s")
            time.sleep(0.2)
        return 0

    def kill(self) -> None:
        self.services.kill(self.udid, self.pid)


class IosTransport:
    """One iPhone and one app on it: launch, files in its Documents, process samples."""

    name = "ios"

    def __init__(self, services: IosServices, udid: str, bundle_id: str):
        self.services = services
        self.udid = udid
        self.bundle_id = bundle_id
        self.bytes_pushed = 0

    # an iPhone has no shell: say so instead of pretending
    def run(self, argv: Sequence[str], *, timeout: float = 60, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None) -> CommandResult:
        raise TransportError(f"iPhone {self.udid} runs no shell commands ({shlex.join(argv)}): "
                             "melt launches its benchmark app instead")

    def shell(self, script: str, *, timeout: float = 60, check: bool = True) -> CommandResult:
        raise TransportError(f"iPhone {self.udid} runs no shell scripts: melt launches its benchmark app instead")

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
              stdout_path: str | None = None, stderr_path: str | None = None) -> IosAppProcess:
        """Launch the app with ``argv`` as its arguments (the app writes its own output files)."""
        pid = self.services.launch(self.udid, self.bundle_id, list(argv), dict(env or {}))
        return IosAppProcess(self.services, self.udid, pid, time.monotonic())

    def install(self, app: Path) -> None:
        self.services.install(self.udid, Path(app))

    def push(self, local: Path, remote: str, **_: Any) -> None:
        _check_relative(remote)
        self.services.push(self.udid, self.bundle_id, Path(local), remote)
        self.bytes_pushed += Path(local).stat().st_size

    def pull(self, remote: str, local: Path) -> None:
        _check_relative(remote)
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.services.pull(self.udid, self.bundle_id, remote, Path(local))

    def exists(self, remote: str) -> bool:
        _check_relative(remote)
        return self.services.exists(self.udid, self.bundle_id, remote)

    def kill(self, pid: int, signal: str = "TERM") -> None:
        self.services.kill(self.udid, pid)

    def close(self) -> None:
        pass


def _check_relative(remote: str) -> None:
    parts = remote.split("/")
    if remote.startswith("/") or ".." in parts or not remote:
        raise TransportError(f"not a path inside the app's Documents: {remote!r}")


# ----------------------------------------------------------- pymobiledevice3


class Pymobiledevice3Services:
    """:class:`IosServices` on pymobiledevice3 (usbmux + lockdown; DVT for processes).

    iOS 17 and later reach DVT only through a RemoteXPC tunnel
    (``pymobiledevice3 remote tunneld`` running as root); launch and process
    samples then fail with pymobiledevice3's own message, which melt passes on.
    """

    def __init__(self) -> None:
        try:
            import pymobiledevice3  # noqa: F401
        except ImportError:
            raise TransportError(INSTALL_HINT) from None

    def _run(self, coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            run = asyncio.run
        else:  # called from inside one (a notebook, Playwright's sync API): a loop on a thread of its own
            def run(c: Any) -> Any:
                with ThreadPoolExecutor(max_workers=1) as pool:
                    return pool.submit(asyncio.run, c).result()
        try:
            return run(coro)
        except (TransportError, IosNotReady):
            raise
        except (ConnectionError, OSError) as exc:
            raise DeviceUnavailableError(f"iPhone not reachable: {exc}") from None
        except Exception as exc:  # pymobiledevice3 raises many types; one line for the user
            if type(exc).__name__ in LOCKED_ERRORS:
                raise DeviceLocked(f"the iPhone is locked: unlock it and keep it unlocked ({exc})") from None
            raise TransportError(f"pymobiledevice3: {type(exc).__name__}: {exc}") from None

    async def _lockdown(self, udid: str) -> Any:
        from pymobiledevice3.lockdown import create_using_usbmux

        return await create_using_usbmux(serial=udid)

    async def _dvt_service_provider(self, udid: str) -> Any:
        """Lockdown up to iOS 16; from iOS 17 the RemoteXPC tunnel tunneld keeps for ``udid``."""
        lockdown = await self._lockdown(udid)
        version = lockdown.all_values.get("ProductVersion")
        if not needs_tunnel(version):
            return lockdown
        try:
            from pymobiledevice3.tunneld.api import get_tunneld_device_by_udid
        except ImportError:  # older releases
            from pymobiledevice3.tunneld import get_tunneld_device_by_udid  # type: ignore[no-redef]
        try:
            rsd = get_tunneld_device_by_udid(udid)
            if hasattr(rsd, "__await__"):
                rsd = await rsd
        except (ConnectionError, OSError) as exc:
            raise TunnelMissing(f"iOS {version} reaches DVT only through a RemoteXPC tunnel and tunneld "
                                f"does not answer ({exc}): {TUNNEL_HINT}") from None
        if rsd is None:
            raise TunnelMissing(f"iOS {version} reaches DVT only through a RemoteXPC tunnel and tunneld "
                                f"has none for {udid}: {TUNNEL_HINT}")
        return rsd

    def list_devices(self) -> list[dict[str, Any]]:
        from pymobiledevice3.usbmux import list_devices

        async def go() -> list[dict[str, Any]]:
            out = []
            for mux in await list_devices():
                try:
                    out.append(await self._info(mux.serial))
                except Exception as exc:  # a locked or unpaired phone still shows up
                    out.append({"udid": mux.serial, "status": f"not paired or locked: {exc}"})
            return out

        return self._run(go())

    async def _info(self, udid: str) -> dict[str, Any]:
        lockdown = await self._lockdown(udid)
        values = lockdown.all_values
        return {"udid": udid, "name": values.get("DeviceName"), "product_type": values.get("ProductType"),
                "ios_version": values.get("ProductVersion"), "build": values.get("BuildVersion")}

    def device_info(self, udid: str) -> dict[str, Any]:
        return self._run(self._info(udid))

    def install(self, udid: str, app: Path) -> None:
        from pymobiledevice3.services.installation_proxy import InstallationProxyService

        async def go() -> None:
            await InstallationProxyService(lockdown=await self._lockdown(udid)).install_from_local(app)

        self._run(go())

    def launch(self, udid: str, bundle_id: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
        from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl

        async def go() -> int:
            async with DvtProvider(await self._dvt_service_provider(udid)) as dvt:
                async with ProcessControl(dvt) as control:
                    return await control.launch(bundle_id, arguments=list(args), environment=dict(env))

        return self._run(go())

    def is_running(self, udid: str, pid: int) -> bool:
        from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider

        async def go() -> bool:
            async with DvtProvider(await self._dvt_service_provider(udid)) as dvt:
                async with DeviceInfo(dvt) as info:
                    return any(p.get("pid") == pid for p in await info.proclist())

        return self._run(go())

    def kill(self, udid: str, pid: int) -> None:
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
        from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl

        async def go() -> None:
            async with DvtProvider(await self._dvt_service_provider(udid)) as dvt:
                async with ProcessControl(dvt) as control:
                    await control.kill(pid)

        self._run(go())

    async def _documents(self, udid: str, bundle_id: str) -> Any:
        from pymobiledevice3.services.house_arrest import HouseArrestService

        return await HouseArrestService.create(await self._lockdown(udid), bundle_id=bundle_id, documents_only=True)

    def push(self, udid: str, bundle_id: str, local: Path, remote: str) -> None:
        async def go() -> None:
            afc = await self._documents(udid, bundle_id)
            parent = remote.rpartition("/")[0]
            if parent:
                await afc.makedirs(f"Documents/{parent}")
            await afc.push(str(local), f"Documents/{remote}")

        self._run(go())

    def pull(self, udid: str, bundle_id: str, remote: str, local: Path) -> None:
        async def go() -> None:
            afc = await self._documents(udid, bundle_id)
            await afc.pull(f"Documents/{remote}", str(local))

        self._run(go())

    def exists(self, udid: str, bundle_id: str, remote: str) -> bool:
        async def go() -> bool:
            afc = await self._documents(udid, bundle_id)
            return bool(await afc.exists(f"Documents/{remote}"))

        return self._run(go())

    def process_sample(self, udid: str, pid: int) -> dict[str, Any] | None:
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
        from pymobiledevice3.services.dvt.instruments.energy_monitor import EnergyMonitor

        async def go() -> dict[str, Any] | None:
            async with DvtProvider(await self._dvt_service_provider(udid)) as dvt:
                async with EnergyMonitor(dvt, [pid]) as monitor:
                    async for sample in monitor:
                        entry = (sample or {}).get(str(pid)) or (sample or {}).get(pid) or {}
                        impact = entry.get("energy.cost")
                        return {"energy_impact": impact} if impact is not None else None
            return None

        try:
            return self._run(go())
        except (TransportError, IosNotReady):
            return None  # not allowed on this OS version, or no developer image mounted


def attached_iphones() -> tuple[list[dict[str, Any]], str | None]:
    """iPhones pymobiledevice3 sees, and a note when it cannot look (not installed, no usbmuxd)."""
    try:
        services = Pymobiledevice3Services()
    except TransportError as exc:
        return [], str(exc)
    try:
        return services.list_devices(), None
    except TransportError as exc:
        return [], f"cannot list iPhones: {exc}"
