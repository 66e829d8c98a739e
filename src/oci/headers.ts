/**
 * Header listing the mirrors a request passed through (Stevedore's own
 * extension, like HTTP's Via): a mirror that finds itself in it stops a loop.
 */
export const VIA_HEADER = 'stevedore-via';
