"""What scripts/istio-render.py and scripts/envoy-gateway-render.py share: the refusal they
raise, pod states given on the command line, writing a file Envoy watches, Maglev's prime."""
import os

# A pod's EndpointSlice conditions, as `--endpoint ip:port=STATE` names them.
STATES = ("ready", "terminating", "stopped")


class Refused(Exception):
    """Something in the manifests the control plane would refuse, or the renderer cannot render."""


def parse_endpoint(text):
    """`ip:port[=ready|terminating|stopped]` -> (ip, port, state)."""
    addr, _, state = text.partition("=")
    state = state or "ready"
    if state not in STATES:
        raise Refused(f"--endpoint {text}: state must be one of {', '.join(STATES)}")
    ip, _, port = addr.rpartition(":")
    return ip.strip("[]"), int(port), state


def write_atomically(path, text):
    # Envoy watches a path_config_source for moves into place (inotify), not for writes.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def is_prime(n):
    # Both control planes check a Maglev table size with Envoy's primality test; trial
    # division agrees with it.
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def load_docs(paths):
    """Every non-empty YAML document of `paths`, each remembering its file (`__file`)."""
    import yaml  # imported here: each script checks for PyYAML first, with an install hint
    docs = []
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    doc["__file"] = path
                    docs.append(doc)
    return docs
