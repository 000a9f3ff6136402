"""The only PyPods code that runs inside pods.

Stdlib plus pymongo's ``bson``, importable by Python 3.8, and relative imports only:
the client imports it as ``pypods.runtime``; pod venvs get a copy of this folder as the
package ``_pypods_runtime`` (see ``pypods.env``), so a pod never needs PyPods itself
installed, nor sees the client's site-packages.
"""
