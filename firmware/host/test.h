/*
 * A tiny test framework: CHECK* leave the test at the first failure, RUN
 * prints each test's name with PASS or FAIL, test_summary() the totals.
 */
#ifndef TEST_H
#define TEST_H

#include <stdio.h>

typedef void (*test_fn_t)(void);

/* Called by the CHECK macros; prints where and what. */
void test_fail(const char *file, int line, const char *what);
void test_failf(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* True when the current test has failed. */
int test_has_failed(void);

void test_run(const char *name, test_fn_t fn);
/* Prints "<suite>: N passed, M failed"; returns the process exit code. */
int test_summary(const char *suite);

/* Hook run after a failed test, e.g. to print recent device logs. */
extern void (*test_on_failure)(void);

#define RUN(fn) test_run(#fn, fn)

#define CHECK(cond) \
    do { \
        if (!(cond)) { \
            test_fail(__FILE__, __LINE__, #cond); \
            return; \
        } \
    } while (0)

#define CHECK_EQ(actual, expected) \
    do { \
        const long long a_ = (long long)(actual), e_ = (long long)(expected); \
        if (a_ != e_) { \
            test_failf(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #actual, a_, #expected, e_); \
            return; \
        } \
    } while (0)

/* For helpers: stop the calling test too once a helper failed. */
#define CHECK_OK(call) \
    do { \
        call; \
        if (test_has_failed()) { \
            return; \
        } \
    } while (0)

#endif /* TEST_H */
