"""The contracts every recq process shares: typed records, the codec that turns bytes into
records or dead letters, the topic catalog and the settings object.

Everything else depends on this package; it depends on nothing of recq's.
"""
