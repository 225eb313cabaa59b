"""Pure codecs: bytes <-> records for RAFS v5, v6 (EROFS), data blobs and Nydus layer files.

Imports only the standard library and the compression/digest libraries.
"""
