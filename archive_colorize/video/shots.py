"""Shots, and the chunks that bound each unit of work.

Cuts are found by PySceneDetect's content detector (HSV change between frames, its default
threshold), reading through PyAV. A long shot is split into chunks of at most `max_frames`,
each starting on the previous chunk's last frame: that frame is decoded twice and written
once, so a chunk's temporal blend has the frame before it without depending on another task."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK_FRAMES = 240  # 10 s at 24 fps: a few minutes of CPU, a few seconds of GPU


@dataclass(frozen=True)
class Chunk:
    shot: int  # the shot's index in the reel
    index: int  # the chunk's index in the reel (the segment's name)
    start: int  # first frame decoded (the overlap frame, when not the shot's first)
    stop: int  # one past the last frame
    shot_start: int  # the shot's frames, for its one global feature
    shot_stop: int

    @property
    def first_written(self) -> int:
        return self.start if self.start == self.shot_start else self.start + 1


def detect_shots(
    path: str, frames: int, threshold: float = 27.0, min_frames: int = 8
) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering frames 0..frames exactly."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(path, backend="pyav")
    manager = SceneManager()
    # luma only: archive film is black and white, and hue and saturation would only dilute
    # the change in lightness that marks a cut
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_frames, luma_only=True))
    manager.detect_scenes(video, show_progress=False)
    cuts = sorted({_frame(s) for s, _ in manager.get_scene_list()[1:]} - {0})
    bounds = [0] + [c for c in cuts if 0 < c < frames] + [frames]
    return list(zip(bounds[:-1], bounds[1:]))


def _frame(timecode) -> int:
    n = getattr(timecode, "frame_num", None)  # PySceneDetect 0.7; 0.6 had get_frames()
    return int(n if n is not None else timecode.get_frames())


def chunks(shots: list[tuple[int, int]], max_frames: int = DEFAULT_CHUNK_FRAMES) -> list[Chunk]:
    if max_frames < 2:
        raise ValueError("a chunk needs at least 2 frames (one overlaps the previous chunk)")
    out: list[Chunk] = []
    for s, (a, b) in enumerate(shots):
        start = a
        while True:
            stop = min(b, start + max_frames)
            out.append(Chunk(s, len(out), start, stop, a, b))
            if stop >= b:
                break
            start = stop - 1  # the overlap: this chunk's first frame is the last one's last
    return out
