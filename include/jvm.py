"""What the platform's Spark JVMs are started with, wherever they are started."""

from __future__ import annotations

# glibc gives each thread that allocates its own arena (up to 8 per core), and a JVM's threads
# (JIT compilers, GC, Netty) keep what they touched in each: two arenas took the stream's JVM
# from 657 to 530-575 MiB (PSS) in `make bench-stream`, at the same throughput. glibc reads it at
# process start, so it goes into the environment of whatever starts the JVM: the stream's
# spark-submit (include.embedded.supervisor), or the Python process that launches one
# (jobs.stream.session). The Python workers inherit it from the JVM.
JVM_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
