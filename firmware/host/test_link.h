/*
 * Tests of what the core asks of the link (test_link.c), run by test-core.
 */
#ifndef TEST_LINK_H
#define TEST_LINK_H

void test_link_run_all(void);

#endif /* TEST_LINK_H */
