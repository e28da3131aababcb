"""The Kafka plumbing every stage may import, beside the contracts in ``schemas``: the
client options and broker checks (``connection``) and the item vocabulary shared over
its compacted topic (``vocabulary``). Stages import ``schemas`` and ``kafkaio``, never
each other (tests/test_layering.py)."""
