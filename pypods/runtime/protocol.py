"""The PyPods wire protocol: message kinds, field names and limits, in one table.

Both ends import this module (the client as ``pypods.runtime.protocol``, the pod as
``_pypods_runtime.protocol``), so the two can never disagree about a name. The prose
version, with examples, is ``docs/protocol.md``.

Every message is one BSON document. Requests go from client to pod, replies from pod
to client::

    request  {"op": <OP_*>, "id": <int>, ...}
    reply    {"id": <int>, "status": "done", "value": <encoded value>}
             {"id": <int>, "status": "error", "error": {<ERROR_* fields>}}

A reply carries the id of the request it answers. Ids are chosen by the client, are
unique for the life of one pod process, and let replies be matched to requests even
when several are in flight.
"""

from __future__ import annotations

#: Bumped whenever a change on one side needs the other side to change too. The client
#: sends its version in ``describe`` and refuses a pod runtime that answers with another.
#: Pod venvs outlive upgrades of PyPods, so this check is what turns a stale runtime copy
#: into a clear error instead of a confusing failure later.
PROTOCOL_VERSION = 3

# -- requests (client -> pod) ------------------------------------------------------
OP_DESCRIBE = "describe"  # {protocol, pickle, cloudpickle}: reply value is the description
OP_INVOKE = "invoke"  # {fn, args? | plain_args?, kwargs?}: call a served function
OP_SHUTDOWN = "shutdown"  # {}: reply, then exit cleanly (atexit handlers run)
# {}: reply, once any cancelled call has ended. Sent right after a cancel (SIGINT):
# a SIGINT that arrived after that call's function had ended is stale, and dropped.
OP_FORGET_CANCEL = "forget_cancel"

REQUEST_OPS = frozenset({OP_DESCRIBE, OP_INVOKE, OP_SHUTDOWN, OP_FORGET_CANCEL})

# Fields of an invoke request. Positional arguments come as "args" (encoded values,
# see codec.py), or, when every one of them is a plain scalar that BSON carries
# exactly (None, bool, float, str, bytes, int within int32), as "a" taken as is: the
# pod can then skip decoding, which is most of the work of a tiny call.
FIELD_ARGS = "args"
FIELD_PLAIN_ARGS = "a"
FIELD_KWARGS = "kwargs"

# Any message may be followed by raw attachments (large binary payloads, see codec.py):
# its document then lists their sizes in bytes, in order, under this field, and tagged
# values inside it refer to them by index.
FIELD_ATTACHMENTS = "x"
# The indexes of the attachments that the receiver should read as ``bytes`` (the
# others become writable buffers that arrays use in place).
FIELD_IMMUTABLE = "xb"

# -- replies (pod -> client) -------------------------------------------------------
STATUS_DONE = "done"
STATUS_ERROR = "error"

# Fields of the "error" document of a reply.
ERROR_KIND = "kind"  # one of the KIND_* values below
ERROR_TYPE = "type"  # qualified name of the exception class raised in the pod
ERROR_MRO = "mro"  # qualified names of that class and its bases, most derived first
ERROR_MESSAGE = "message"  # str() of the exception
ERROR_TRACEBACK = "traceback"  # formatted traceback, pod frames only

KIND_RAISED = "raised"  # pod code raised an exception
KIND_NO_SUCH_FUNCTION = "no-such-function"  # the pod does not serve that name
KIND_BAD_REQUEST = "bad-request"  # the request was malformed or could not be decoded
KIND_START_FAILED = "start-failed"  # importing pod.py failed; the pod exits after this

# -- the describe request and reply -------------------------------------------------
# The request says whether the client opted into pickle ("pickle": bool) and whether
# it has cloudpickle ("cloudpickle": bool); pickles are used on the connection only
# if the client opted in, and cloudpickle only if both sides have it.
# The reply's value:
# {"protocol": int, "python": "3.11.7", "pid": int, "cloudpickle": bool,
#  "functions": [{"name", "func_name", "qualname", "module", "doc", "signature"}, ...]}
# "name" is the name the function is served under (its global name in pod.py);
# "func_name" is its ``__name__``, which differs for aliases (``bar = foo``).
# "signature" is None when the function has none that inspect can read, else
# {"parameters": [{"name", "kind", "default"?, "default_repr"?, "annotation"?}, ...],
#  "return_annotation"?: str}. "kind" is int(inspect.Parameter.kind). A default the
# codec can carry is sent as "default"; any other as its repr in "default_repr".

# -- limits -------------------------------------------------------------------------
#: The smallest valid BSON document: an int32 length and the terminating NUL.
MIN_FRAME_SIZE = 5

#: BSON's length prefix is a signed int32, so no document can be larger than this. A
#: reader refuses any prefix above its configured maximum before allocating anything,
#: so a corrupt or hostile prefix can never cause a huge allocation.
MAX_FRAME_SIZE = 2**31 - 1

#: The most attachments one message may announce.
MAX_ATTACHMENTS = 1 << 20

#: How much of a repr is kept when a default value cannot be sent as a value.
MAX_DEFAULT_REPR = 200
