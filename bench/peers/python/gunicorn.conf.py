# gunicorn settings of sockd's benchmarks (with -w, -b and --chdir given on
# the command line): sync workers, which close the connection after every
# response; with BENCH_READY_FILE set each worker appends its pid once it
# has loaded the app, which is when it starts accepting.
import os

worker_class = "sync"
graceful_timeout = 30
accesslog = None


def post_worker_init(worker):
    f = os.environ.get("BENCH_READY_FILE")
    if f:
        with open(f, "a") as out:
            out.write("%d\n" % os.getpid())
