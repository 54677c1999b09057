import { checkTemplate } from '../ignition/check.js';
import type { LoadOptions } from './load.js';

/**
 * What `rackboot validate` checks: the whole config, every Ignition/Butane template rendered for the
 * machines that use it; missing boot assets are warnings (assets are downloaded, not committed).
 * `machines adopt` writes nothing these checks refuse.
 */
export const VALIDATE_CHECKS: LoadOptions = { missingAssets: 'warn', checkTemplate };
