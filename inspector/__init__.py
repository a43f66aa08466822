"""The inspection daemon, laid out along its data path (docs/architecture.md):

- stages/   capture -> trigger -> crop -> batch -> score -> decide -> encode (frontend: capture -> trigger -> crop)
- network/  the sockets: one socket-thread base; publisher, external trigger input, backfill; CURVE keys
- state/    what outlives a run: the journal, the image store, the recorder that writes both, history queries
- tools/    operator commands beside the daemon: replay, collect, listen
- pipeline.py wires the stages into threads; station.py is the one start-up (engine -> station -> pipeline)
  used by `inspector run` and `inspector replay`; cli.py turns arguments into typed options.

No torch and no trainer here, at any level: models arrive through engines/.
"""
