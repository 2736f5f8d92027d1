"""The song-processing pipeline of the qanat seeds, as qanat jobs.

``process_song(path)`` fingerprints a file, identifies the recording, fetches metadata
from three services in parallel, transcodes the audio, downloads the cover art,
extracts its palette, stores the song and notifies the user. Every step is
checkpointed: kill the worker half-way and start it again, and the song resumes after
the last completed step.

The external tools and APIs are stand-ins (``services.py``), so this runs offline.

Storage comes from ``QANAT_STORAGE`` (any qanat storage URL), else from ``SONGS_DB``
(a file path), else ``sqlite:///songs.db`` in the current directory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from examples.songs import services
from pydantic import BaseModel

import qanat
from qanat import Context, Queue, Step, job, run


def storage_url() -> str:
    if os.environ.get("QANAT_STORAGE"):
        return os.environ["QANAT_STORAGE"]
    if os.environ.get("SONGS_DB"):
        return "sqlite:///" + str(Path(os.environ["SONGS_DB"]).resolve())
    return "sqlite:///songs.db"


class Song(BaseModel):
    """What ``process_song`` returns (validated, and revived as a ``Song`` on replay)."""

    id: str
    title: str
    artist: str
    album: str
    year: int
    tags: list[str]
    ogg: str
    cover: str
    palette: list[str]


# --- small jobs that the main one calls -------------------------------------------------


@job(retry=5, backoff="200ms")
async def lookup(fingerprint: str) -> str:
    """MusicBrainz: fingerprint -> recording id.

    The step has no retries of its own (``retry=1``): the stand-in's 503 on the first
    call fails the step, the failure is checkpointed and raised here, and the *job* is
    retried 200 ms later. The new attempt runs the failed step again.
    """
    data = await run(Step("musicbrainz", retry=1), services.musicbrainz_lookup, fingerprint)
    return str(data["recordings"][0]["id"])


@job(cache="1h")
async def spotify(recording_id: str) -> dict[str, Any]:
    track = await run("spotify-api", services.fetch_spotify, recording_id)
    return {"title": track["name"], "artist": track["artists"][0]["name"]}


@job(cache="1h")
async def lastfm(recording_id: str) -> dict[str, Any]:
    # The stand-in answers 429 + Retry-After the first time: the step waits and retries.
    info = await run("lastfm-api", services.fetch_lastfm, recording_id)
    return {"tags": info["track"]["toptags"]}


@job(cache="1h")
async def audiodb(recording_id: str) -> dict[str, Any]:
    data = await run("audiodb-api", services.fetch_audiodb, recording_id)
    return {"album": data["album"], "year": data["year"], "cover_url": data["thumb"]}


@job(timeout="30s", retry=2)
async def transcode(path: str) -> str:
    """mp3 -> ogg; an attempt taking longer than 30 s is cancelled with qanat.Timeout."""
    # services.transcode is a plain blocking function: run() calls it in a thread.
    return str(await run("ffmpeg", services.transcode, path))


@job
def notify(title: str, body: str) -> None:
    """A plain ``def`` handler: it runs in a thread and uses the blocking step functions."""
    qanat.sync.run("push", services.send_notification, title, body)


# --- the main job -----------------------------------------------------------------------


def _failed(input: dict[str, Any], error: BaseException) -> None:
    services.say(input["path"], f"FAILED for good: {error!r}")


@job(retry=3, backoff="1s", on_failure=_failed)
async def process_song(path: str, ctx: Context) -> Song:
    say = services.say
    if ctx.attempt > 1:
        say(path, f"attempt {ctx.attempt} (completed steps are replayed, not re-run)")

    qanat.progress(0, "fingerprinting")
    fp = await run("fingerprint", services.fingerprint, path)
    say(path, f"fingerprint {fp[:14]}…")

    qanat.progress(10, "identifying")
    recording_id = await lookup.run(fingerprint=fp)
    qanat.log("identified", recording_id=recording_id)
    say(path, f"MusicBrainz id {recording_id[:8]}…")

    qanat.progress(20, "fetching metadata")
    # Three child executions in parallel; their step keys follow call order, so a
    # replay matches each call to its recorded child.
    sp, lf, adb = await asyncio.gather(
        spotify.run(recording_id=recording_id),
        lastfm.run(recording_id=recording_id),
        audiodb.run(recording_id=recording_id),
    )
    say(path, f"metadata: {sp['title']!r} by {sp['artist']}, {adb['album']} ({adb['year']})")

    qanat.progress(45, "transcoding")
    ogg = await transcode.run(path=path)
    say(path, f"transcoded -> {Path(ogg).name}")

    qanat.progress(60, "downloading cover art")
    # The fake CDN drops the first download: the step retries itself (up to 5 attempts,
    # 100 ms then 200 ms apart) without failing the job.
    cover = await run(
        Step("cover-art", retry=5, backoff=["100ms", "200ms"]),
        services.download_cover,
        adb["cover_url"],
    )
    say(path, f"cover art -> {Path(cover).name}")

    qanat.progress(75, "extracting palette")
    palette = await run("palette", services.extract_palette, cover)
    say(path, f"palette {' '.join(palette[:3])} …")

    song = Song(
        id=recording_id,
        title=sp["title"],
        artist=sp["artist"],
        album=adb["album"],
        year=adb["year"],
        tags=lf["tags"],
        ogg=ogg,
        cover=cover,
        palette=palette,
    )

    qanat.progress(90, "storing")
    await run("store", services.store_song, song.model_dump())
    qanat.log("stored", title=song.title)

    await notify.run(
        title="Song added", body=f"{song.title} by {song.artist} was added to your library"
    )
    qanat.progress(100, "done")
    return song


queue = Queue(
    jobs=[process_song, lookup, spotify, lastfm, audiodb, transcode, notify],
    storage=storage_url(),
    retention={"completed": "7d", "failed": "30d"},
)
