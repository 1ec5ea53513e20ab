"""Temporal chunk geometry shared by every form of the hybrid op.

Tokens are frame-major: frame ``f`` holds tokens ``[f*frame_tokens, (f+1)*frame_tokens)``.
Frames are grouped into chunks of ``chunk_frames`` (T_c); the last chunk may be shorter.
For the queries of chunk ``c`` the softmax window is frames ``[max(c*T_c - T_o, 0), min((c+1)*T_c, T))``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """One query chunk, in frames (half-open ranges)."""

    index: int
    start: int  # first query frame
    end: int  # one past the last query frame
    window_start: int  # first frame of the softmax window (overlap included)

    @property
    def window_end(self) -> int:
        return self.end


@dataclass(frozen=True)
class ChunkGeometry:
    num_frames: int
    frame_tokens: int
    chunk_frames: int
    overlap_frames: int

    @classmethod
    def from_tokens(cls, num_tokens: int, frame_tokens: int, chunk_frames: int, overlap_frames: int) -> "ChunkGeometry":
        if frame_tokens <= 0:
            raise ValueError(f"frame_tokens must be positive, got {frame_tokens}")
        if chunk_frames <= 0:
            raise ValueError(f"chunk_frames (T_c) must be positive, got {chunk_frames}")
        if overlap_frames < 0:
            raise ValueError(f"overlap_frames (T_o) must be >= 0, got {overlap_frames}")
        if num_tokens % frame_tokens != 0:
            raise ValueError(
                f"sequence length N={num_tokens} is not a multiple of frame_tokens={frame_tokens}; "
                "tokens must be frame-major with the same number of tokens in every frame"
            )
        return cls(num_tokens // frame_tokens, frame_tokens, chunk_frames, overlap_frames)

    @property
    def num_chunks(self) -> int:
        return -(-self.num_frames // self.chunk_frames)

    def chunk(self, c: int) -> Chunk:
        start = c * self.chunk_frames
        end = min(start + self.chunk_frames, self.num_frames)
        return Chunk(c, start, end, max(start - self.overlap_frames, 0))

    def chunks(self) -> list[Chunk]:
        return [self.chunk(c) for c in range(self.num_chunks)]

    def tokens(self, first_frame: int, end_frame: int) -> slice:
        return slice(first_frame * self.frame_tokens, end_frame * self.frame_tokens)

    def linear_bounds(self, ch: Chunk, causal: bool, include_window: bool = False) -> tuple[int, int]:
        """``(lo, hi)``: chunk ``ch``'s linear set is frames ``[0, lo)`` plus ``[hi, T)``.

        causal: frames before the window (``hi = T``); bidirectional: every frame outside it.  ``include_window``
        moves the window into the linear set (pure linear attention: causal = every frame up to the chunk's end).
        """
        t = self.num_frames
        if include_window:
            return (ch.window_end, t) if causal else (t, t)
        return ch.window_start, (t if causal else ch.window_end)

    def linear_cuts(self, causal: bool, include_window: bool = False) -> list[int]:
        """Sorted frame indices where some chunk's linear set starts or stops, plus 0 and T.

        The spans between consecutive cuts are the units the linear branch sums keys over: every linear set is a union
        of whole spans (about two per chunk).
        """
        bounds = {b for ch in self.chunks() for b in self.linear_bounds(ch, causal, include_window)}
        return sorted({0, self.num_frames} | bounds)

    def batches(self, max_chunks: int) -> list[list[Chunk]]:
        """Consecutive chunks grouped for one batched softmax call, at most ``max_chunks`` per group.

        A group's chunks have equal query and window lengths, so their windows are equally spaced (``T_c`` frames
        apart) slices of the key sequence.  Chunks whose window is clipped at frame 0, and a ragged last chunk, differ
        in length from their neighbours and form groups of their own.
        """
        groups: list[list[Chunk]] = []
        for ch in self.chunks():
            g = groups[-1] if groups else None
            if (g and len(g) < max_chunks and ch.end - ch.start == g[0].end - g[0].start
                    and ch.window_end - ch.window_start == g[0].window_end - g[0].window_start):
                g.append(ch)
            else:
                groups.append([ch])
        return groups

