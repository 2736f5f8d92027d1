"""Offline stand-ins for the external tools and APIs of the song pipeline.

Every function here fakes something the real pipeline would call: ``fpcalc``,
MusicBrainz, Spotify, Last.fm, TheAudioDB, ``ffmpeg``, a CDN for cover art, an image
library, the application's database and a push-notification service. They are
deterministic (derived from a hash of their input), take a few tens of milliseconds,
and write their files under ``SONGS_OUT`` (default: ``<tmp>/qanat-songs``).

Three of them misbehave on purpose, once per input, so the example shows retries:
``musicbrainz_lookup`` answers 503 to the first call for a fingerprint (a job-level
retry), ``fetch_lastfm`` answers "429, retry after 0.2 s" to the first call for a
recording (a step waits and retries), and ``download_cover`` fails the first download
of each cover (a step retries with backoff).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import qanat


def out_dir() -> Path:
    """Where transcoded files, covers and the library database go."""
    path = Path(os.environ.get("SONGS_OUT") or Path(tempfile.gettempdir()) / "qanat-songs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _latency(*parts: str, low: float = 0.02, high: float = 0.12) -> float:
    """A small, deterministic delay for this input (seconds)."""
    frac = int(_digest("latency", *parts)[:4], 16) / 0xFFFF
    return low + (high - low) * frac


def say(song: str, message: str) -> None:
    """Print one line of what is happening, prefixed by the song."""
    print(f"  [{Path(song).name:>14}] {message}", flush=True)


# --- fpcalc ---------------------------------------------------------------------------


def fingerprint(path: str) -> str:
    """Stand-in for ``fpcalc path``: an acoustic fingerprint (a hash of the path)."""
    time.sleep(_latency("fp", path))
    return "AQAD" + _digest("fp", path)[:24]


# --- MusicBrainz -------------------------------------------------------------------------

_TITLES = [
    "Blue Monday",
    "Harvest Moon",
    "Paper Planes",
    "Hyperballad",
    "Teardrop",
    "Windowlicker",
    "Heroes",
    "Jolene",
    "Midnight City",
    "Roygbiv",
]
_ARTISTS = [
    "New Order",
    "Neil Young",
    "M.I.A.",
    "Björk",
    "Massive Attack",
    "Aphex Twin",
    "David Bowie",
    "Dolly Parton",
    "M83",
    "Boards of Canada",
]


_mb_calls: dict[str, int] = {}


async def musicbrainz_lookup(fingerprint: str) -> dict[str, Any]:
    """Stand-in for the MusicBrainz recording search; the first call per fingerprint gets 503."""
    await asyncio.sleep(_latency("mb", fingerprint))
    _mb_calls[fingerprint] = _mb_calls.get(fingerprint, 0) + 1
    if _mb_calls[fingerprint] == 1:
        raise ConnectionError("MusicBrainz: 503 Service Unavailable")
    if not fingerprint.startswith("AQAD"):
        raise qanat.NonRetryable(f"MusicBrainz: {fingerprint!r} is not a fingerprint")
    h = _digest("mb", fingerprint)
    return {
        "recordings": [{"id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}", "score": 100}]
    }


def _pick(recording_id: str, options: list[str], salt: str = "") -> str:
    return options[int(_digest(salt, recording_id)[:6], 16) % len(options)]


# --- metadata APIs ---------------------------------------------------------------------


async def fetch_spotify(recording_id: str) -> dict[str, Any]:
    """Stand-in for the Spotify track API."""
    await asyncio.sleep(_latency("spotify", recording_id))
    return {
        "name": _pick(recording_id, _TITLES),
        "artists": [{"name": _pick(recording_id, _ARTISTS)}],
        "popularity": int(_digest("pop", recording_id)[:2], 16) % 100,
        "duration_ms": 150_000 + int(_digest("dur", recording_id)[:4], 16) % 200_000,
    }


_lastfm_calls: dict[str, int] = {}


class RateLimited(qanat.RetryAfter):
    """What the fake Last.fm client raises on HTTP 429."""


async def fetch_lastfm(recording_id: str) -> dict[str, Any]:
    """Stand-in for Last.fm ``track.getInfo``; the first call per recording is rate limited."""
    await asyncio.sleep(_latency("lastfm", recording_id))
    _lastfm_calls[recording_id] = _lastfm_calls.get(recording_id, 0) + 1
    if _lastfm_calls[recording_id] == 1:
        raise RateLimited(0.2, "Last.fm: 429 Too Many Requests, Retry-After: 0.2")
    tags = ["electronic", "rock", "folk", "trip-hop", "synthpop", "ambient", "country"]
    first = _pick(recording_id, tags, "t1")
    second = _pick(recording_id, [t for t in tags if t != first], "t2")
    return {
        "track": {"toptags": [first, second], "listeners": int(_digest("ls", recording_id)[:5], 16)}
    }


async def fetch_audiodb(recording_id: str) -> dict[str, Any]:
    """Stand-in for TheAudioDB track lookup: album and cover art URL."""
    await asyncio.sleep(_latency("audiodb", recording_id))
    h = _digest("adb", recording_id)
    return {
        "album": f"Album {h[:4].upper()}",
        "year": 1970 + int(h[4:6], 16) % 55,
        "thumb": f"https://cdn.example.invalid/covers/{h[:16]}.jpg",
    }


# --- ffmpeg ---------------------------------------------------------------------------


def transcode(path: str) -> str:
    """Stand-in for ``ffmpeg -i song.mp3 -c:a libvorbis song.ogg`` (blocking, so a thread)."""
    time.sleep(_latency("ffmpeg", path, low=0.1, high=0.3))
    out = out_dir() / (Path(path).stem + ".ogg")
    out.write_bytes(b"OggS\x00\x02" + _digest("ogg", path).encode() + b"\x00" * 64)
    return str(out)


# --- cover art and palette -----------------------------------------------------------------

_downloads: dict[str, int] = {}


def download_cover(url: str) -> str:
    """Stand-in for downloading the cover; the CDN drops the first request for each URL."""
    time.sleep(_latency("cdn", url))
    _downloads[url] = _downloads.get(url, 0) + 1
    if _downloads[url] == 1:
        raise ConnectionError(f"CDN reset the connection while downloading {url}")
    out = out_dir() / (url.rsplit("/", 1)[-1])
    out.write_bytes(b"\xff\xd8\xff\xe0" + _digest("jpg", url).encode())
    return str(out)


def extract_palette(image_path: str) -> list[str]:
    """Stand-in for an image library's dominant-colour extraction."""
    data = Path(image_path).read_bytes()
    h = hashlib.sha256(data).hexdigest()
    return ["#" + h[i : i + 6] for i in range(0, 30, 6)]


# --- the application's own database and notifications ----------------------------------------


def library_path() -> Path:
    return out_dir() / "library.db"


def store_song(song: dict[str, Any]) -> int:
    """INSERT the song into the application's ``songs`` table; returns its row id."""
    with sqlite3.connect(library_path()) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS songs (id TEXT PRIMARY KEY, title TEXT, artist TEXT,"
            " album TEXT, ogg TEXT, cover TEXT, palette TEXT)"
        )
        cur = db.execute(
            "INSERT OR REPLACE INTO songs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                song["id"],
                song["title"],
                song["artist"],
                song["album"],
                song["ogg"],
                song["cover"],
                ",".join(song["palette"]),
            ),
        )
        return int(cur.lastrowid or 0)


def library_rows() -> list[tuple[str, str, str]]:
    """(title, artist, album) of every song in the library."""
    if not library_path().exists():
        return []
    with sqlite3.connect(library_path()) as db:
        return list(db.execute("SELECT title, artist, album FROM songs ORDER BY title"))


def send_notification(title: str, body: str) -> None:
    """Stand-in for a push notification."""
    print(f"  >> push notification: {title}: {body}", flush=True)
