import type { TemplateVars } from '../../src/ignition/template.js';

/** The machine every corpus case is rendered for. */
export const CORPUS_VARS: TemplateVars = {
  mac: '52:54:00:12:34:56',
  hostname: 'node1',
  ip: '10.77.0.21',
  profile: 'coreos',
  base_url: 'http://10.77.0.1:8080',
  ignition_url: 'http://10.77.0.1:8080/ignition/52-54-00-12-34-56.ign?token=corpus-token',
  installer_ignition_url: 'http://10.77.0.1:8080/ignition/installer/52-54-00-12-34-56.ign?token=corpus-token',
  events_url: 'http://10.77.0.1:8080/api/v1/machines/52-54-00-12-34-56/events?token=corpus-token',
  vars: { role: 'worker', dc: 'ams1' },
};
