/*
 * Tests of the queue in front of the core's task (test_queue.c), run by test-core.
 */
#ifndef TEST_QUEUE_H
#define TEST_QUEUE_H

void test_queue_run_all(void);

#endif /* TEST_QUEUE_H */
