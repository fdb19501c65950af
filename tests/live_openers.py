"""Openers for live-source tests: each call opens the next of a list of real video files (cv2.VideoCapture),
as a camera or stream that drops and comes back would."""

from __future__ import annotations

import cv2


def opener_sequence(targets: list[str], opened: list[str]):
    """Each call opens the next path of `targets` (the last one again when they run out)."""

    def open_() -> cv2.VideoCapture:
        target = targets[min(len(opened), len(targets) - 1)]
        opened.append(target)
        return cv2.VideoCapture(target)

    return open_
