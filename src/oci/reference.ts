import { nameInvalid, tagInvalid } from './errors.js';
import { truncate } from './digest.js';

/** Repository name component grammar from the distribution spec. */
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

/** Validates a repository path (`library/nginx`) and returns it unchanged. */
export function validateRepository(name: string): string {
  if (name.length === 0) throw nameInvalid('empty repository name');
  if (name.length > MAX_NAME_LENGTH) throw nameInvalid(`repository name longer than ${MAX_NAME_LENGTH} characters`);
  for (const component of name.split('/')) {
    if (!COMPONENT.test(component)) throw nameInvalid(`invalid path component "${truncate(component, 40)}" in ${truncate(name)}`);
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

export function validateTag(tag: string): string {
  if (!isValidTag(tag)) {
    throw tagInvalid(`invalid tag "${truncate(tag, 40)}"`);
  }
  return tag;
}

/**
 * A registry host as the first path component (`ghcr.io`, `registry.local:5000`,
 * `localhost`): the same rule docker uses to tell a domain from a Hub namespace.
 */
export function looksLikeRegistryHost(component: string): boolean {
  if (component !== 'localhost' && !component.includes('.') && !component.includes(':')) return false;
  return HOST.test(component);
}

const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
const HOST = new RegExp(`^${LABEL}(?:\\.${LABEL})*(?::[0-9]{1,5})?$`);
