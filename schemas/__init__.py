"""The contracts every recq process shares, one place for each concept:

- ``records`` / ``codec``: typed records and the decoder that returns a record or a dead
  letter; ``jsonschema`` exports them for producers in other languages;
- ``features``: how events become interactions and states (every state builder);
- ``reward``: what each interaction earns (streams, simulator, the demo's scoring);
- ``manifest`` / ``model_store``: the snapshot contract and the store's layout;
- ``settings``: one typed object per stage; ``connection``: how a process reaches Kafka;
- ``topics``: the topic catalog.

Everything else depends on this package; it depends on nothing of recq's and not on torch.
"""
