"""The wizard's web application (FastAPI on uvicorn, bound to 127.0.0.1).

Routes (JSON unless said):

``GET /`` the page; ``GET /static/*`` its script and style (no build step);
``GET /api/state`` the current step and choices (a reloaded page resumes here);
``GET /api/sources`` what can be calibrated: the simulator, LSL streams seen,
BrainFlow boards; ``POST /api/patient`` step 1; ``GET /api/quality`` per-channel
quality; ``POST /api/channels/{name}`` mark a channel (``{"bad": true}``);
``POST /api/signal/done`` go on (``{"override_reason": "..."}`` when too few
channels are good); ``WS /ws/signal`` live traces (10 Hz) and quality (2 Hz);
``GET /api/profiles?subject=ID`` the subject's calibration profiles;
``GET /api/unfinished?subject=ID`` the subject's sessions a wizard left before the
end, and ``POST /api/resume`` (``{"subject": ..., "session": "ses-02"}``) takes one
up: its signal is checked again, then it goes on where it was;
``POST /api/calibration/start`` (trial settings) and ``/api/calibration/stop``;
``POST /api/training/start``, ``/api/training/more`` (back to record more trials);
``POST /api/online/start`` (``{"stimulation": bool, "override_reason": ...}``),
``/api/online/arm``, ``/api/online/estop``, ``/api/online/stop``;
``GET /api/online/status``; ``WS /ws/run`` every cue the moment it is emitted,
trial progress, decisions, training progress, run events, state changes, and the
online status twice a second (the page answers each cue drawn with
``{"type": "shown", "t": <cue time>}``, which measures the display lag).

Errors come back as ``{"error": "...", "hint": "..."}`` with 400 (a choice that
cannot be taken) or 409 (not at that step), so the page can show them as they are.
Requests whose ``Host`` is not a loopback name are refused (a page elsewhere
cannot reach the wizard through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.middleware.trustedhost import TrustedHostMiddleware

from bci_runtime.errors import BciError, ConfigError, StepOrderError
from bci_runtime.session import json_safe
from bci_runtime.web.wizard import profiles
from bci_runtime.web.wizard.choices import MI_CLASSES, SSVEP_FREQS, PatientChoice
from bci_runtime.web.wizard.run_configs import OnlineSettings, TrialSettings
from bci_runtime.web.wizard.wizard import Wizard, plugin

STATIC = Path(__file__).resolve().parent / "static"
TRACE_EVERY_S = 0.1
QUALITY_EVERY = 5  # trace frames per quality update
STATUS_EVERY_S = 0.5  # the online status panel's refresh


class ChannelMark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bad: bool


class SignalDone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    override_reason: str | None = None


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str
    session: str


class OnlineStart(OnlineSettings):
    override_reason: str | None = None


def create_app(wizard: Wizard) -> FastAPI:
    """The FastAPI application serving ``wizard``."""
    app = FastAPI(title="bci-runtime calibration wizard", docs_url=None, redoc_url=None)
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=["127.0.0.1", "localhost", "[::1]", "testserver"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(BciError)
    async def bci_error(request: Request, exc: BciError) -> JSONResponse:
        status = 409 if isinstance(exc, StepOrderError) else 400
        return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # a bug must still answer in the page's language, and never lose the session
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}",
                             "hint": "the session folder keeps what was recorded; reload "
                                     "the page"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"] if p != "body")
            problems.append(f"{where}: {e['msg']}" if where else e["msg"])
        return JSONResponse({"error": "; ".join(problems), "hint": None}, status_code=400)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/state")
    async def state() -> dict[str, Any]:
        return wizard.state()

    @app.get("/api/sources")
    async def sources(wait_s: float = 1.0) -> dict[str, Any]:
        streams = await asyncio.to_thread(_lsl_streams, min(max(wait_s, 0.1), 5.0))
        return {"simulator": {"preset": wizard.preset, "mi_classes": list(MI_CLASSES),
                              "ssvep_freqs": list(SSVEP_FREQS)},
                "lsl": streams, "boards": _boards()}

    @app.post("/api/patient")
    async def patient(choice: PatientChoice) -> dict[str, Any]:
        return await asyncio.to_thread(wizard.choose_patient, choice)

    @app.get("/api/quality")
    async def quality() -> dict[str, Any]:
        return await asyncio.to_thread(wizard.quality)

    @app.post("/api/channels/{name}")
    async def mark(name: str, body: ChannelMark) -> dict[str, Any]:
        return wizard.mark_channel(name, body.bad)

    @app.post("/api/signal/done")
    async def signal_done(body: SignalDone) -> dict[str, Any]:
        return await asyncio.to_thread(wizard.finish_signal_check, body.override_reason)

    @app.get("/api/profiles")
    async def list_profiles(subject: str) -> dict[str, Any]:
        return {"profiles": [profiles.summary(p) for p in
                             profiles.list_profiles(wizard.sessions_root, subject)]}

    @app.get("/api/unfinished")
    async def unfinished(subject: str) -> dict[str, Any]:
        return {"sessions": wizard.unfinished_sessions(subject)}

    @app.post("/api/resume")
    async def resume(body: ResumeRequest) -> dict[str, Any]:
        return await asyncio.to_thread(wizard.resume, body.subject, body.session)

    @app.post("/api/calibration/start")
    async def calibration_start(body: TrialSettings) -> dict[str, Any]:
        return await asyncio.to_thread(wizard.start_calibration, body)

    @app.post("/api/calibration/stop")
    async def calibration_stop() -> dict[str, Any]:
        return await asyncio.to_thread(wizard.stop_calibration)

    @app.post("/api/training/start")
    async def training_start() -> dict[str, Any]:
        return await asyncio.to_thread(wizard.start_training)

    @app.post("/api/training/more")
    async def training_more() -> dict[str, Any]:
        return wizard.back_to_calibration()

    @app.post("/api/online/start")
    async def online_start(body: OnlineStart) -> dict[str, Any]:
        settings = OnlineSettings(**body.model_dump(exclude={"override_reason"}))
        return await asyncio.to_thread(wizard.start_online, settings, body.override_reason)

    @app.post("/api/online/arm")
    async def online_arm() -> dict[str, Any]:
        return await asyncio.to_thread(wizard.arm)

    @app.post("/api/online/estop")
    async def online_estop() -> dict[str, Any]:
        return wizard.emergency_stop()

    @app.post("/api/online/stop")
    async def online_stop() -> dict[str, Any]:
        return await asyncio.to_thread(wizard.stop_online)

    @app.get("/api/online/status")
    async def online_status() -> dict[str, Any]:
        return {"status": json_safe(wizard.online_status())}

    @app.websocket("/ws/run")
    async def run_feed(socket: WebSocket) -> None:
        await socket.accept()
        queue = wizard.broadcast.subscribe()
        listener = asyncio.create_task(_listen(socket, wizard))
        try:
            await socket.send_text(json.dumps({"type": "state", **json_safe(wizard.state())}))
            loop = asyncio.get_running_loop()
            next_status = loop.time()
            while not listener.done():
                wait = max(0.0, next_status - loop.time())
                try:
                    message = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    next_status = loop.time() + STATUS_EVERY_S
                    run = wizard.run
                    if run is not None and run.kind == "online":
                        message = {"type": "status",
                                   **json_safe(await asyncio.to_thread(wizard.online_status))}
                    else:
                        continue
                await socket.send_text(json.dumps(json_safe(message)))
        except (WebSocketDisconnect, RuntimeError):
            return  # the page closed or reloaded: the run goes on without it
        finally:
            wizard.broadcast.unsubscribe(queue)
            listener.cancel()

    @app.websocket("/ws/signal")
    async def signal(socket: WebSocket) -> None:
        await socket.accept()
        frame = 0
        try:
            while wizard.step == "signal" and wizard.acquisition is not None:
                message: dict[str, Any] = {"type": "traces",
                                           **wizard.acquisition.traces()}
                if frame % QUALITY_EVERY == 0:
                    message["quality"] = await asyncio.to_thread(wizard.quality)
                await socket.send_text(json.dumps(message))
                frame += 1
                await asyncio.sleep(TRACE_EVERY_S)  # the page's frame rate
            await socket.send_text(json.dumps({"type": "step", "step": wizard.step}))
            await socket.close()
        except WebSocketDisconnect:
            return  # the page closed or reloaded: the wizard goes on without it
        except (BciError, ConfigError) as exc:
            await socket.send_text(json.dumps({"type": "error", "error": str(exc)}))
            await socket.close()

    return app


async def _listen(socket: WebSocket, wizard: Wizard) -> None:
    """What the page says on the run feed: each cue it drew (for the display lag)."""
    try:
        while True:
            message = json.loads(await socket.receive_text())
            if message.get("type") == "shown" and isinstance(message.get("t"), (int, float)):
                wizard.cue_shown(float(message["t"]))
    except (WebSocketDisconnect, RuntimeError, ValueError):
        return


def _lsl_streams(wait_s: float) -> list[dict[str, Any]]:
    return [s.as_dict() for s in plugin("lsl_streams")(wait_s)]


def _boards() -> list[dict[str, Any]]:
    try:
        return [b.as_dict() for b in plugin("boards")()]
    except BciError:  # BrainFlow missing: the other sources still work
        return []
