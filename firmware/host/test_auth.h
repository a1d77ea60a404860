/*
 * Authentication tests of the core (test_auth.c), run by test-core after
 * protocol v2's.
 */
#ifndef TEST_AUTH_H
#define TEST_AUTH_H

void test_auth_run_all(void);

#endif /* TEST_AUTH_H */
