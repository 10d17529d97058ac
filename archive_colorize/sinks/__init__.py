"""Where a run's outputs go: the folder of images (images.py) and the IIIF manifest of the
run (iiif.py). A new output (a METS file, a catalogue feed) is a module here."""
