"""The wizard's web application (FastAPI on uvicorn, bound to 127.0.0.1).

Routes (JSON unless said):

``GET /`` the page; ``GET /static/*`` its script and style (no build step);
``GET /api/state`` the current step and choices (a reloaded page resumes here);
``GET /api/sources`` what can be calibrated: the simulator, LSL streams seen,
BrainFlow boards; ``POST /api/patient`` step 1; ``GET /api/quality`` per-channel
quality; ``POST /api/channels/{name}`` mark a channel (``{"bad": true}``);
``POST /api/signal/done`` go on (``{"override_reason": "..."}`` when too few
channels are good); ``WS /ws/signal`` live traces (10 Hz) and quality (2 Hz).

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
from bci_runtime.web.wizard.choices import MI_CLASSES, PatientChoice
from bci_runtime.web.wizard.wizard import Wizard, plugin

STATIC = Path(__file__).resolve().parent / "static"
TRACE_EVERY_S = 0.1
QUALITY_EVERY = 5  # trace frames per quality update


class ChannelMark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bad: bool


class SignalDone(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
        return {"simulator": {"preset": wizard.preset, "mi_classes": list(MI_CLASSES)},
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


def _lsl_streams(wait_s: float) -> list[dict[str, Any]]:
    return [s.as_dict() for s in plugin("lsl_streams")(wait_s)]


def _boards() -> list[dict[str, Any]]:
    try:
        return [b.as_dict() for b in plugin("boards")()]
    except BciError:  # BrainFlow missing: the other sources still work
        return []
