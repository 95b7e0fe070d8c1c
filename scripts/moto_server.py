"""moto's server with every request handled one at a time.

moto's own `moto_server` handles requests on concurrent threads without locking
its backends: two concurrent conditional writes can both succeed, and it sometimes
answers HTTP 500 ("dictionary changed size during iteration"). DynamoDB applies
each write and transaction atomically, so this wrapper serialises the requests to
give the tests the same guarantee. Connections are still accepted concurrently.

moto also backs up every table a TransactWriteItems touches with a deep copy
(all its items and all its stream records) in case it must roll back, so each
payment costs more than the one before: after a few thousand, one took a second.
This wrapper backs up the touched items and the streams' lengths instead, and
restores those when the transaction is cancelled.

Usage: python moto_server.py HOST PORT
"""

import copy
import signal
import sys
import threading
import types

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def serialised(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            # Materialise the body inside the lock: the backend is read while iterating.
            return list(app(environ, start_response))

    return handle


def touched_items(backend, transact_items):
    """(table, hash, range, a copy of the item or None) for each item the transaction names."""
    touched = []
    for entry in transact_items:
        op = next(iter(entry.values()), None)
        if not isinstance(op, dict):
            continue
        table = backend.tables.get(op.get("TableName"))
        attrs = op.get("Key") or op.get("Item") or {}
        if table is None or table.hash_key_attr not in attrs:
            continue  # moto rejects it before changing anything
        hash_value = DynamoType(attrs[table.hash_key_attr])
        range_value = None
        if table.range_key_attr is not None:
            if table.range_key_attr not in attrs:
                continue
            range_value = DynamoType(attrs[table.range_key_attr])
        current = table.get_item(hash_value, range_value)
        touched.append((table, hash_value, range_value, copy.deepcopy(current)))
    return touched


def restore(touched, stream_lengths):
    for table, hash_value, range_value, item in reversed(touched):
        if range_value is None:
            if item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        elif item is None:
            table.items[hash_value].pop(range_value, None)
        else:
            table.items[hash_value][range_value] = item
    for shard, length in stream_lengths:
        del shard.items[length:]


def roll_back_items_not_tables():
    transact_write_items = DynamoDBBackend.transact_write_items

    def with_item_backups(self, transact_items):
        touched = touched_items(self, transact_items)
        shards = {id(t.stream_shard): t.stream_shard for t, *_ in touched if t.stream_shard}
        stream_lengths = [(shard, len(shard.items)) for shard in shards.values()]
        try:
            transact_write_items(self, transact_items)
        except Exception:
            restore(touched, stream_lengths)
            raise

    # moto's own backup: keep the table itself (restoring it is then a no-op);
    # its other deep copies (an item's old image in update_item) stay deep.
    dynamodb_models.copy = types.SimpleNamespace(
        deepcopy=lambda value, memo=None: value if isinstance(value, Table) else copy.deepcopy(value, memo)
    )
    DynamoDBBackend.transact_write_items = with_item_backups


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    roll_back_items_not_tables()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
