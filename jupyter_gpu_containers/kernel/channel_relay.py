"""The relay between a kernel's channels and the network, run inside a Slurm job's container (the
batch placement's kernels, relay_files.py) by the kernel's own interpreter, beside the kernel.

Standalone: the service copies this file into the kernel's private directory, and the image's
Python runs it (any Python 3 with pyzmq; nothing of this package is imported). The kernel binds
its five channels over ipc in that private directory (its user's alone), which no other account
on the node reaches; this relay binds the node's tcp ports, each a CurveZMQ server with the
kernel's own secret key (the kernel service's clients use the same keypair as their client key:
jupyter_client's ``_create_connected_socket``), and forwards what an authenticated client sends.
ZAP (the authentication protocol libzmq asks of a handler bound in the same context) admits on
shell, control, stdin and iopub only the client whose public key is the kernel's own; on hb any
Curve client (jupyter_client's heartbeat uses a random keypair, and hb only echoes). A client
without Curve, or with another key, never completes its handshake: it reads nothing, and what it
sends never reaches the kernel.

Run as ``python relay.py CONFIG``: without Curve in the image's libzmq it prints a sentence and
exits 3 (the kernel is then not started: no port is ever open without Curve). Otherwise it
forks; the child binds the ports, and the parent exits 0 once it has (1 when it could not), so
that the kernel starts only behind the relay; the child writes the ports (the ports file, whole,
then renamed) once the kernel has bound its own sockets, then relays until the kernel ends. The
relay ignores the signals meant for the kernel (an interrupt).
"""

import contextlib
import json
import os
import signal
import sys
import time

NO_CURVE = (
    "jupyter-gpu-containers: this image's pyzmq has no CurveZMQ (zmq.has('curve') is False), "
    "which a kernel on a Slurm node needs to keep its channels private: install a pyzmq built "
    "with libsodium (pip install pyzmq) in the image."
)
CHANNELS = ("shell", "control", "stdin", "iopub", "hb")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def _authenticator(zmq, context):
    """The ZAP handler's socket: a REP bound where libzmq asks about every Curve handshake
    (bound before any port, so that no handshake is ever judged without it)."""
    zap = context.socket(zmq.REP)
    zap.linger = 0
    zap.bind(ZAP_ENDPOINT)
    return zap


def _answer_zap(zap, allowed):
    """One ZAP request answered: 200 for the kernel's own key (any Curve key on the "hb"
    domain), 400 for everything else."""
    frames = zap.recv_multipart()
    if len(frames) < 6:
        return
    version, request_id, domain, _address, _identity, mechanism = frames[:6]
    credentials = frames[6:]
    admitted = mechanism == b"CURVE" and (
        domain == b"hb" or (len(credentials) == 1 and credentials[0] == allowed)
    )
    status = b"200" if admitted else b"400"
    text = b"OK" if admitted else b"not this kernel's key"
    zap.send_multipart([version, request_id, status, text, b"", b""])


def _front(zmq, context, kind, secret, public, domain):
    socket = context.socket(kind)
    socket.linger = 0
    socket.zap_domain = domain
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    port = socket.bind_to_random_port("tcp://0.0.0.0")
    return socket, port


def _back(zmq, context, kind, endpoint, identity=None):
    socket = context.socket(kind)
    socket.linger = 0
    if identity is not None:
        socket.identity = identity
    socket.connect(endpoint)
    return socket


def _write_ports(directory, name, ports):
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(ports, out)
    os.rename(tmp, os.path.join(directory, name))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def relay(config, ready_fd, kernel):
    """Bind, tell the parent (one byte on ``ready_fd``), write the ports once the kernel's own
    sockets are there, relay until the process ``kernel`` ends (a container ends all of its
    processes anyway; a pyxis step's processes outside a container may outlive its task)."""
    import zmq
    from zmq.utils import z85

    secret = config["secret_key"].encode("ascii")
    public = config["public_key"].encode("ascii")
    allowed = z85.decode(public)
    context = zmq.Context()
    zap = _authenticator(zmq, context)
    # The shell and stdin dealers carry one identity: the kernel sends an input_request on stdin
    # to the identity its shell request came from.
    identity = b"jgc-relay-" + os.urandom(8).hex().encode("ascii")
    pairs = []
    ports = {}
    for name in CHANNELS:
        endpoint = config["kernel"][name]
        domain = b"hb" if name == "hb" else b"kernel"
        if name == "iopub":
            front, port = _front(zmq, context, zmq.XPUB, secret, public, domain)
            # Every client's subscription goes on to the kernel, not only the first.
            front.setsockopt(zmq.XPUB_VERBOSE, 1)
            back = _back(zmq, context, zmq.XSUB, endpoint)
        else:
            front, port = _front(zmq, context, zmq.ROUTER, secret, public, domain)
            if name == "hb":
                # Any Curve client may ping (see ZAP above): a ping, not a flood of bytes for
                # the kernel to echo.
                front.setsockopt(zmq.MAXMSGSIZE, 1024)
            back = _back(
                zmq,
                context,
                zmq.DEALER,
                endpoint,
                identity if name in ("shell", "stdin") else None,
            )
        ports[name + "_port"] = port
        pairs.append((front, back))
    # Bound: the kernel may start (the parent exits, and the shell execs the kernel). The
    # ports are written once the kernel has bound its own sockets, so that whoever reads them
    # finds a kernel that answers (as when a kernel wrote its ports back itself).
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    paths = [config["kernel"][name].split("://", 1)[1] for name in CHANNELS]
    while not all(os.path.exists(path) for path in paths):
        if not _alive(kernel):
            return
        time.sleep(0.05)
    _write_ports(config["directory"], config["ports_file"], ports)
    poller = zmq.Poller()
    poller.register(zap, zmq.POLLIN)
    other = {}
    for front, back in pairs:
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        other[front] = back
        other[back] = front
    while _alive(kernel):
        for socket, _ in poller.poll(1000):
            if socket is zap:
                _answer_zap(zap, allowed)
                continue
            # Everything waiting on this socket, each message whole (its more-flag frames).
            while True:
                try:
                    frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                # Never blocking: a full queue (1000 messages the other side has not taken)
                # drops the message, as a ROUTER does, instead of stopping every channel and
                # the authentication with it.
                with contextlib.suppress(zmq.Again):
                    other[socket].send_multipart(frames, zmq.NOBLOCK, copy=False)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: relay.py CONFIG\n")
        return 2
    try:
        import zmq
    except ImportError:
        sys.stderr.write("jupyter-gpu-containers: this image's Python has no pyzmq.\n")
        return 3
    if not zmq.has("curve"):
        sys.stderr.write(NO_CURVE + "\n")
        return 3
    with open(argv[1]) as f:
        config = json.load(f)
    # The shell that started this relay becomes the kernel (it execs it once this process
    # exits): the relay ends when that process does.
    kernel = os.getppid()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        said = os.read(read_fd, 1)
        os.close(read_fd)
        if said != b"1":
            sys.stderr.write("jupyter-gpu-containers: the kernel's channel relay did not start.\n")
            return 1
        return 0
    os.close(read_fd)
    # The kernel's signals (an interrupt; pyxis's scancel signals every process of the step)
    # are not the relay's: it ends with the container.
    # It stays in the kernel's process group, so that what ends the job's processes by their
    # group ends it too.
    for name in ("SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        relay(config, write_fd, kernel)
    except BaseException as e:  # the parent says it did not start; the reason in the log
        sys.stderr.write(f"jupyter-gpu-containers: the kernel's channel relay failed: {e!r}\n")
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
