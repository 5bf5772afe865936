"""The HTTP ceiling: a FastAPI app that reads one multipart upload and answers {}.

    python -m uvicorn bench.noop_app:app --host 127.0.0.1 --port 8001 --no-access-log

`bench/throughput.py` serves it with the same uvicorn settings as `facedemo serve` (one process,
uvicorn's default event loop and HTTP parser, no access log) and drives it like /predict: the
difference between the two is what decoding, the models and the JSON answer cost.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, File, UploadFile

app = FastAPI(title="no-op upload")


@app.post("/upload")
async def upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Read the upload whole, like /predict does, and answer an empty JSON object."""
    await file.read()
    return {}
