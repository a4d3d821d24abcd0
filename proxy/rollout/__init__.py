"""``strangler rollout``, the progressive-rollout controller (docs/rollout.md): it reads the
gateways' counters (:mod:`.sources`), judges each route's current step (:mod:`.judge`), writes
the next weights into the table (:mod:`.edit`) and keeps what must survive a restart
(:mod:`.state`); :mod:`.controller` runs the rounds."""
