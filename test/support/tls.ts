// Test certificates made with openssl: a CA and a server certificate for 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestCertificate {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** SHA-256 fingerprint of the server certificate, as node's X509Certificate prints it. */
  fingerprint: string;
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe', timeout: 30_000 });
}

/** A fresh CA (in `dir`, named by `name`) and a server certificate for 127.0.0.1 and localhost signed by it. */
export function makeCertificate(dir: string, name: string): TestCertificate {
  const file = (suffix: string): string => join(dir, `${name}${suffix}`);
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name} test CA`, '-keyout', file('-ca.key'), '-out', file('-ca.crt')]);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', file('.key'), '-out', file('.csr')]);
  const ext = file('.ext');
  execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > "${ext}"`]);
  openssl(['x509', '-req', '-in', file('.csr'), '-CA', file('-ca.crt'), '-CAkey', file('-ca.key'), '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', file('.crt')]);
  const fingerprint = new X509Certificate(readFileSync(file('.crt'))).fingerprint256;
  return { caFile: file('-ca.crt'), certFile: file('.crt'), keyFile: file('.key'), fingerprint };
}
