/*
 * Protocol v2 tests of the core (test_v2.c), run by test-core after the
 * seed protocol's.
 */
#ifndef TEST_V2_H
#define TEST_V2_H

void test_v2_run_all(void);

#endif /* TEST_V2_H */
