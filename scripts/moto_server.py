"""moto's server with every request handled one at a time.

moto's own `moto_server` handles requests on concurrent threads without locking
its backends: two concurrent conditional writes can both succeed, and it sometimes
answers HTTP 500 ("dictionary changed size during iteration"). DynamoDB applies
each write and transaction atomically, so this wrapper serialises the requests to
give the tests the same guarantee. Connections are still accepted concurrently.

Usage: python moto_server.py HOST PORT
"""

import signal
import sys
import threading

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def serialised(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            # Materialise the body inside the lock: the backend is read while iterating.
            return list(app(environ, start_response))

    return handle


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
