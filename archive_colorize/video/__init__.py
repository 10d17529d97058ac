"""Film reels: a reel is a manifest row, a shot is a unit of work.

probe.py says what a reel holds, shots.py cuts it into shots and bounded chunks, frames.py
turns decoded Y planes into L* and colour back into chroma planes (the Y plane is never
touched), temporal.py keeps colour still from frame to frame and measures how still it is,
encode.py writes a shot's segment and joins the segments into the mezzanine and access copy,
and reel.py puts them together for one chunk of one shot, on whatever engine it is given.
"""
