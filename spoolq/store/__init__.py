"""The spool's storage: the only package that speaks SQL. Internal: use ``spoolq.Spool``.

| module      | keeps                                                                    |
|-------------|--------------------------------------------------------------------------|
| ``sql``     | the schema and every statement, each written once                        |
| ``db``      | connections, transactions, retries, the write gate, SQLite error mapping |
| ``names``   | channel/peer/node ids and job-number blocks                              |
| ``commit``  | group commit: the one entrance for writes that create messages           |
| ``inbox``   | leases and their ends, state transitions, dead letters, stats, sweeps    |
| ``jobs``    | messages addressed by job number (beanstalkd, admin tools)               |
| ``outbox``  | outbox batches and settling; receiving peers' batches                    |
| ``routes``  | ``routes.json``                                                          |
| ``admin``   | browsing without leasing, the hold queue, the audit (``sql_admin``)      |

It returns neutral values (records, id sets, ``spoolq.message`` views), never
wire types or protocol handles.
"""
