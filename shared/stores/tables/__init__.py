"""Every Azure Table Storage call the gateway makes, behind the store protocols.

`account` holds the service client, the one boundary that maps azure-core
errors, and the few row operations every store is made of; then one module
per store: `subscriptions`, `backend_state`, `counters`, `ledger`, `affinity`.

Layout (table names carry `GATEWAY_TABLE_PREFIX`):

    <prefix>subscriptions  PartitionKey "sub", RowKey "s-<id>"     the subscription (JSON, key hashes only)
                           PartitionKey "sub", RowKey "k-<hash>"   a copy per key, so a key is found in one read
    <prefix>backends       PartitionKey "breaker" | "probe", RowKey "<backend>|<deployment>"
    <prefix>limits         PartitionKey "<subscription id>", RowKey "rate" | "quota": Int64 counters
    <prefix>usage          PartitionKey "<subscription id>", RowKey "<UTC hour>|<deployment>|<backend>"
    <prefix>affinity       PartitionKey "<response, file or batch id>", RowKey "pin": backend, subscription, expiry

A subscription row and its key rows share a partition and change together in
one entity-group transaction, so a rotated key is never half-replaced. Every
read-modify-write is an ETag compare-and-swap (`IfNotModified`), retried on
`ResourceModifiedError`; creates race on `ResourceExistsError`.

The clients are built lazily inside the running loop on the gateway's one
aiohttp session (`AioHttpTransport(session=..., session_owner=False)`), with a
connection string locally and `DefaultAzureCredential` (the user-assigned
identity) in Azure. Tables are created once, on first use. azure-core
exceptions become `StoreUnavailable` in `TableAccount.boundary` and nowhere else; every HTTP request
the SDK sends (retries included) is counted, for the cost figures.
"""
