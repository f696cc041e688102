/*
 * Threads: how many a call may use, and staying alive where OpenMP alone would not.
 *
 * Knows no ISA. The tile loop (fastpw/_kernels.pyx) asks these helpers, with the GIL
 * held, how many threads a call gets, then runs its OpenMP region without the GIL.
 *
 * - fork(): libgomp's thread pool is not copied into a child, and the child's next
 *   parallel region waits forever for the missing pool threads. A pthread_atfork handler
 *   marks a child of a process that has run a fastpw team; every call there runs serially
 *   (PyTorch does the same). A child forked before any team keeps its threads.
 * - Thread creation: libgomp ends the whole process when it cannot create a thread
 *   ("Thread creation failed"), as under a pid limit or an address-space limit. Before a
 *   call uses more threads than any call of this process has used, fpw_reserve_threads
 *   creates that many itself, with the default attributes libgomp uses, and the call gets
 *   only as many as could be created.
 * - Cores: fpw_affinity_cores counts the CPUs this process may run on (taskset, cpusets);
 *   the Python layer adds the cgroup CPU quota.
 * - Signals: fpw_seconds is the clock that paces the tile loop's checks for Ctrl-C.
 */
#ifndef FASTPW_THREADS_H
#define FASTPW_THREADS_H

#include <time.h>

#if defined(__unix__) || defined(__APPLE__)
#define FPW_HAVE_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#else
#define FPW_HAVE_PTHREADS 0
#endif

/* Flags read by several threads at once: relaxed atomics, which cost a plain load. */
#if defined(__GNUC__) || defined(__clang__)
static int fpw_flag_get(const int* flag) {
    return __atomic_load_n(flag, __ATOMIC_RELAXED);
}
static void fpw_flag_set(int* flag, int value) {
    __atomic_store_n(flag, value, __ATOMIC_RELAXED);
}
#else
static int fpw_flag_get(const int* flag) {
    return *(const volatile int*)flag;
}
static void fpw_flag_set(int* flag, int value) {
    *(volatile int*)flag = value;
}
#endif

#ifdef _OPENMP
#include <omp.h>
static int fpw_openmp_enabled(void) {
    return 1;
}
static int fpw_max_threads(void) {
    return omp_get_max_threads();
}
static int fpw_thread_num(void) {
    return omp_get_thread_num();
}
static int fpw_thread_limit(void) {
    return omp_get_thread_limit();
}
static int fpw_in_parallel(void) {
    return omp_in_parallel();
}
#else
static int fpw_openmp_enabled(void) {
    return 0;
}
static int fpw_max_threads(void) {
    return 1;
}
static int fpw_thread_num(void) {
    return 0;
}
static int fpw_thread_limit(void) {
    return 1;
}
static int fpw_in_parallel(void) {
    return 0;
}
#endif

/* ---- fork ------------------------------------------------------------------------- */

static int fpw_team_started;  /* this process (or an ancestor) has run an OpenMP team */
static int fpw_forked_serial; /* a forked child of such a process: run serially */

static void fpw_note_team_started(void) {
    if (!fpw_flag_get(&fpw_team_started)) fpw_flag_set(&fpw_team_started, 1);
}

static int fpw_serial_after_fork(void) {
    return fpw_flag_get(&fpw_forked_serial);
}

#if FPW_HAVE_PTHREADS
static void fpw_at_fork_in_child(void) {
    /* Only the forking thread exists here; plain stores are enough. */
    if (fpw_team_started) fpw_forked_serial = 1;
}
#endif

/* Register the at-fork handler once (called at import). Returns 0 on success. */
static int fpw_install_fork_handler(void) {
#if FPW_HAVE_PTHREADS
    static int installed;
    if (installed) return 0;
    if (pthread_atfork(NULL, NULL, fpw_at_fork_in_child) != 0) return -1;
    installed = 1;
#endif
    return 0;
}

/* ---- cores ------------------------------------------------------------------------ */

/* CPUs this process may run on, or 0 where the OS does not say. */
static int fpw_affinity_cores(void) {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
    return 0;
}

/* ---- thread creation -------------------------------------------------------------- */

#if FPW_HAVE_PTHREADS
typedef struct fpw_probe {
    pthread_mutex_t lock;
    pthread_cond_t released_cond;
    int released;
} fpw_probe;

static void* fpw_probe_thread(void* arg) {
    /* Stay alive until every probe thread exists: libgomp's pool threads live at once. */
    fpw_probe* probe = (fpw_probe*)arg;
    pthread_mutex_lock(&probe->lock);
    while (!probe->released) pthread_cond_wait(&probe->released_cond, &probe->lock);
    pthread_mutex_unlock(&probe->lock);
    return NULL;
}
#endif

static int fpw_threads_proven = 1; /* largest team this process could create */

/* How many of `wanted` threads (the caller included) this process can have at once: at
 * most `wanted`, at least 1. Creates and joins wanted - 1 threads the first time a count
 * is asked for; later calls up to the proven count cost one load. Conservative: pool
 * threads libgomp already has count against the limit here although it would reuse them.
 * Called with the GIL held, so two callers never probe at once. */
static int fpw_reserve_threads(int wanted) {
    if (wanted <= fpw_flag_get(&fpw_threads_proven)) return wanted;
#if FPW_HAVE_PTHREADS
    enum { PROBE_MAX = 1024 };
    pthread_t threads[PROBE_MAX];
    fpw_probe probe;
    int created = 0;
    if (wanted - 1 > PROBE_MAX) wanted = PROBE_MAX + 1;
    pthread_mutex_init(&probe.lock, NULL);
    pthread_cond_init(&probe.released_cond, NULL);
    probe.released = 0;
    while (created < wanted - 1 && pthread_create(&threads[created], NULL, fpw_probe_thread, &probe) == 0)
        created++;
    pthread_mutex_lock(&probe.lock);
    probe.released = 1;
    pthread_cond_broadcast(&probe.released_cond);
    pthread_mutex_unlock(&probe.lock);
    for (int i = 0; i < created; i++) pthread_join(threads[i], NULL);
    pthread_cond_destroy(&probe.released_cond);
    pthread_mutex_destroy(&probe.lock);
    if (created + 1 > fpw_flag_get(&fpw_threads_proven)) fpw_flag_set(&fpw_threads_proven, created + 1);
    return created + 1;
#else
    return wanted;
#endif
}

/* ---- clock ------------------------------------------------------------------------ */

/* Seconds on a clock that only moves forward (where the OS has one). */
static double fpw_seconds(void) {
    struct timespec now;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &now);
#else
    timespec_get(&now, TIME_UTC);
#endif
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

#endif /* FASTPW_THREADS_H */
