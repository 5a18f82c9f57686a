"""Guest-side sources: the tenant SDK and the wasm runner. Pure Python, stdlib only.

* ``_tenantflow_sdk.py``: the tenant SDK shared by every backend (read its docstring for how a
  backend wires it). Import it as ``sandbox._guest._tenantflow_sdk`` on the host side.
* ``_tenantflow_runner.py``, ``_tenantflow_preload.py``, ``runner.wit``: the wasm runner app that
  componentize-py builds into the one component every tenant shares.

Nothing here may import other tenantflow code: these files also run inside the wasm guest.
"""
