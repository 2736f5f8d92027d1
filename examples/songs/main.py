"""Run the song pipeline end to end with an in-process worker.

    python examples/songs/main.py [song.mp3 ...]

Storage: ``QANAT_STORAGE`` (a URL), else ``SONGS_DB`` (a path), else ``./songs.db``.
Transcoded files, covers and the library database go to ``SONGS_OUT``
(default ``<tmp>/qanat-songs``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

# Make ``examples.songs`` importable when this file is run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.songs import services
from examples.songs.app import Song, queue, storage_url

import qanat

SONGS = ["uploads/a.mp3", "uploads/b.mp3", "uploads/c.mp3"]


async def main(paths: list[str]) -> int:
    began = time.perf_counter()
    print(f"qanat song pipeline, storage {storage_url()}, {len(paths)} songs")

    # Global hooks see every execution of every job.
    def on_retry(ev: qanat.Event) -> None:
        print(f"  (job retry) {ev.job} …{ev.execution_id[-6:]} failed: {ev.payload['detail']}")

    queue.on("retry", on_retry)

    async with queue:  # opens storage and runs a worker in this process
        handles = []
        for path in paths:
            h = await queue.jobs.process_song.start(path=path)
            print(f"started process_song({path!r}) as {h.id}")

            def show(p: qanat.Progress, path: str = path) -> None:
                services.say(path, f"progress {p.pct:3.0f}%  {p.message or ''}")

            h.on_progress(show)
            handles.append(h)

        results = await asyncio.gather(
            *(h.result(timeout=60) for h in handles), return_exceptions=True
        )

        print("\nresults")
        failed = 0
        for path, h, res in zip(paths, handles, results, strict=True):
            if isinstance(res, Song):
                print(
                    f"  {path}: {res.title} — {res.artist}, {res.album} ({res.year}), "
                    f"tags {res.tags}, palette {res.palette[:2]}…"
                )
            else:
                failed += 1
                print(f"  {path}: {await h.status()}: {res!r}")

        first = handles[0]
        print(f"\nsteps of {first.id} ({paths[0]})")
        for s in await first.steps():
            took = (
                (s.finished_at - s.started_at).total_seconds() * 1000
                if (s.finished_at and s.started_at)
                else 0.0
            )
            tries = f", {s.attempts} tries" if s.attempts > 1 else ""
            print(f"  {s.key:<12} {s.kind:<6} {s.status:<9} {took:6.1f} ms{tries}")
        print("its child executions (queue.executions.list(parent_id=...))")
        async for child in queue.executions.list(parent_id=first.id):
            assert child.info is not None
            steps = ", ".join(
                f"{s.key} ({s.attempts} tries)" if s.attempts > 1 else s.key
                for s in await child.steps()
            )
            print(
                f"  {child.job:<10} {child.info.status:<9} attempt {child.info.attempt}"
                f"  steps: {steps}"
            )
        print("its log")
        for line in await first.logs():
            print(f"  {line.at:%H:%M:%S.%f} {line.message} {line.fields}")

        print("\nlibrary (the application's own songs table)")
        for title, artist, album in services.library_rows():
            print(f"  {title} — {artist} [{album}]")

        stats = await queue.stats()
        print("\nqueue.stats()")
        print(f"  by status: {stats['by_status']}")
        for name, counts in sorted(stats["by_job"].items()):
            print(f"  {name:<13} {counts}")
        mean = stats["mean_runtime"]
        p95 = stats["p95_runtime"]
        print(
            f"  retries: {stats['retries']}, mean run time: "
            f"{'-' if mean is None else f'{mean * 1000:.0f} ms'}, "
            f"p95: {'-' if p95 is None else f'{p95 * 1000:.0f} ms'}"
        )

    print(f"\ndone in {time.perf_counter() - began:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or SONGS)))
