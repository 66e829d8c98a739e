// Runs in a worker thread: bcrypt is slow on purpose, and must not run on the event loop.
import bcrypt from 'bcryptjs';

export type BcryptTask = { op: 'compare'; password: string; hash: string } | { op: 'hash'; password: string; cost: number };

export default function run(task: BcryptTask): Promise<boolean | string> {
  return task.op === 'compare' ? bcrypt.compare(task.password, task.hash) : bcrypt.hash(task.password, task.cost);
}
