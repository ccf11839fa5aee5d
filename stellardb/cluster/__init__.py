"""Beyond one machine: the crossmatch SQL and the scorer run partition by partition on a
Dask cluster over HATS catalogues (docs/cluster.md).

The layer sits beside ``release`` (whose catalogues it reads and whose HATS writing it
reuses) and below ``cli``: ``engine`` is Dask (client, tasks, retries, memory budget),
``catalogues`` and ``stats`` read HATS metadata, ``sky`` is the partition geometry, and
``xmatch`` and ``score`` are the two cluster commands.
"""
