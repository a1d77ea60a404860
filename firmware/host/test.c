/*
 * The tiny test framework: see test.h.
 */
#include "test.h"

#include <stdarg.h>

static int s_passed;
static int s_failed;
static int s_current_failed;

void (*test_on_failure)(void);

void
test_fail(const char *file, int line, const char *what)
{
    printf("  %s:%d: check failed: %s\n", file, line, what);
    s_current_failed = 1;
}

void
test_failf(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    printf("  %s:%d: check failed: ", file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    s_current_failed = 1;
}

int
test_has_failed(void)
{
    return s_current_failed;
}

void
test_run(const char *name, test_fn_t fn)
{
    s_current_failed = 0;
    fn();
    if (s_current_failed) {
        if (test_on_failure != NULL) {
            test_on_failure();
        }
        s_failed++;
        printf("FAIL %s\n", name);
    } else {
        s_passed++;
        printf("PASS %s\n", name);
    }
    fflush(stdout);
}

int
test_summary(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, s_passed, s_failed);
    fflush(stdout);
    return s_failed == 0 ? 0 : 1;
}
