// Key Vault holding the admin API key; the Function App reads it through a Key Vault
// reference with the user-assigned identity (Key Vault Secrets User, rbac.bicep).
param name string
param location string
param tags object
@secure()
param adminKey string
@description('Enabled: reachable over the public endpoint (Entra auth only). Disabled: only through a private endpoint (main.bicep: privateNetworking). Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'
@description('The firewall\'s answer to traffic no rule allows: Deny when private (the default); Allow while the public endpoint serves the app (Entra auth only).')
@allowed(['Allow', 'Deny'])
param networkDefaultAction string = 'Deny'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_110:Purge protection would make azd down --purge fail and block re-provisioning an environment of the same name for the retention period; the vault holds one key, which azd keeps in the environment and writes again on every provision
  // checkov:skip=CKV_AZURE_42:Soft delete is on (7 days); recoverable also requires purge protection, off for the reason given for CKV_AZURE_110
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }

  resource adminKeySecret 'secrets' = {
  // checkov:skip=CKV_AZURE_41:The admin key is rotated by provisioning a new value (README: deploy), and an expiry date would not stop the Key Vault reference from resolving, so a date here would promise what nothing enforces
    name: 'gateway-admin-key'
    properties: {
      value: adminKey
      contentType: 'text/plain'
      attributes: {
        enabled: true
      }
    }
  }
}

output name string = vault.name
output id string = vault.id
// Without a version: the app follows the latest version of the secret.
output adminKeySecretUri string = vault::adminKeySecret.properties.secretUri
