"""Finding and ending hanging transactions (KIP-664), the way ``kafka-transactions.sh
find-hanging`` / ``abort`` do, for the partitions a worker reads.

Why: a broker restarted while transactional producers are active can load its transaction
coordinator state before partition leaders are known, skip the commit/abort markers ("Couldn't
find leader endpoint for partitions ... these partitions are likely deleted already") and leave
the partition's producer state with an ongoing transaction forever. The partition's last stable
offset (LSO) then never advances and every ``read_committed`` consumer of it stalls. The
coordinator has forgotten the transaction, so nothing on the broker side will ever end it.

- ``protocol``: the requests aiokafka 0.14 lacks, declared with its protocol primitives;
- ``txn_admin``: those requests (and ListOffsets) sent to partition leaders and coordinators;
- ``txn_log``: the coordinators' commit/abort decisions, read from ``__transaction_state``,
  and the pure ``decide``;
- ``reaper``: ``HangingTransactions``, which watches partitions and ends what hangs there.
"""

from .protocol import ProducerState
from .reaper import HangingTransactions
from .txn_admin import (
    IN_PROGRESS_STATES,
    OFFSETS_TOPIC,
    CoordinatorTransaction,
    TransactionAdminError,
    coordinator_transactions,
    describe_producers,
    end_offsets,
    end_transaction,
    group_offsets_partition,
    high_watermarks,
    offsets_partition,
)
from .txn_log import TRANSACTION_LOG_TOPIC, Decision, decide, transaction_decisions

__all__ = [
    "IN_PROGRESS_STATES",
    "OFFSETS_TOPIC",
    "TRANSACTION_LOG_TOPIC",
    "CoordinatorTransaction",
    "Decision",
    "HangingTransactions",
    "ProducerState",
    "TransactionAdminError",
    "coordinator_transactions",
    "decide",
    "describe_producers",
    "end_offsets",
    "end_transaction",
    "group_offsets_partition",
    "high_watermarks",
    "offsets_partition",
    "transaction_decisions",
]
