"""The hello-world flow of the original PyPods README, runnable from the project root:

    python example/client.py

The pod lives in ../pods/hello_world_pod: pod.py, requirements.txt, and the venv that
the first run builds.
"""

from pathlib import Path

from pypods.pods import PodLoader

# By default pods live in ./pods under the working directory; anchoring the folder
# here lets this example run from anywhere.
PODS = Path(__file__).resolve().parent.parent / "pods"

pl = PodLoader("hello_world_pod", globals(), pods_dir=PODS)
pl.load_pod()  # builds the pod's venv on the first run, then starts the pod

print("foo(1, 2) =", foo(1, 2))  # noqa: F821 - injected by load_pod()
print("foo_in_module_test() =", foo_in_module_test())  # noqa: F821
print("the pod runs in", whoami()["prefix"])  # noqa: F821

pl.unload_pod()  # stops the pod and removes the injected names
print("after unload, 'foo' in globals():", "foo" in globals())
